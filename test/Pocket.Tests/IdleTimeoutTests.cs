using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>
/// Servers close connections whose peer went silent, on the listener's clock (a fake one here), and keep those
/// with a request in progress. The clock is advanced a quarter timeout at a time (the check's period) until the
/// quiet connections are reported closed; the report is logged inside the check, so it is seen as it happens.
/// </summary>
public sealed class IdleTimeoutTests
{
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan Step = IdleTimeout / 4;

    [Fact]
    public async Task QuietConnectionsAreClosedAfterTheTimeoutWhileBusyOnesAndNewOnesAreServed()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        var handler = new TestHandler();
        using var server = new FrameServer("test", new FrameServerOptions { IdleTimeout = IdleTimeout, TimeProvider = time }, handler, log);
        server.Start();

        // Answered once, then silent.
        using var idle = await TestSupport.ConnectRawAsync(server.EndPoint);
        Assert.Equal(new byte[] { 1, 2, 3 }, await PingAsync(idle, [1, 2, 3]));

        // Stopped in the middle of a request's body.
        using var stalled = await TestSupport.ConnectRawAsync(server.EndPoint);
        await TestSupport.SendRawAsync(stalled, [.. TestSupport.Header(Opcode.WriteExtent, 4 * TestHandler.Piece), .. new byte[TestHandler.Piece]]);
        Assert.True(await handler.PieceRead.WaitAsync(TestSupport.Patience));

        // Waiting for the server to answer: not idle however long it takes.
        using var busy = await TestSupport.ConnectRawAsync(server.EndPoint);
        await TestSupport.SendRawAsync(busy, TestSupport.Header(Opcode.Count, 0, requestId: 9));
        Assert.True(await handler.HoldStarted.WaitAsync(TestSupport.Patience));

        var elapsed = TimeSpan.Zero;
        var closedAt = new Dictionary<Socket, TimeSpan>();
        await TestSupport.WaitUntilAsync(
            () =>
            {
                time.Advance(Step);
                elapsed += Step;
                foreach (var socket in new[] { idle, stalled })
                {
                    if (!closedAt.ContainsKey(socket) && log.ReportedIdle(socket))
                    {
                        closedAt[socket] = elapsed;
                    }
                }

                return Task.FromResult(closedAt.Count == 2);
            },
            "both quiet connections are closed");

        Assert.All(closedAt.Values, at => Assert.True(at >= IdleTimeout, $"closed after {at} of silence, under the timeout"));
        Assert.True(await TestSupport.IsClosedAsync(idle));
        Assert.True(await TestSupport.IsClosedAsync(stalled));

        // Well past the timeout: the busy connection is kept and gets its reply, and new connections are served.
        time.Advance(4 * IdleTimeout);
        Assert.False(log.ReportedIdle(busy));
        handler.Hold.Release();
        var reply = await TestSupport.ReadReplyAsync(busy);
        Assert.Equal(9u, reply?.Header.RequestId);
        using var fresh = await TestSupport.ConnectRawAsync(server.EndPoint);
        Assert.Equal(new byte[] { 4 }, await PingAsync(fresh, [4]));
        Assert.Equal(new byte[] { 5 }, await PingAsync(busy, [5]));
    }

    [Fact]
    public async Task AConnectionStreamingABodyOrSendingRequestsIsKept()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        var handler = new TestHandler();
        using var server = new FrameServer("test", new FrameServerOptions { IdleTimeout = IdleTimeout, TimeProvider = time }, handler, log);
        server.Start();
        using var socket = await TestSupport.ConnectRawAsync(server.EndPoint);

        // A body trickling in, each piece well within the timeout of the last: three timeouts in all.
        const int pieces = 8;
        await TestSupport.SendRawAsync(socket, TestSupport.Header(Opcode.WriteExtent, pieces * TestHandler.Piece, requestId: 3));
        for (var i = 0; i < pieces; i++)
        {
            await TestSupport.SendRawAsync(socket, new byte[TestHandler.Piece]);
            Assert.True(await handler.PieceRead.WaitAsync(TestSupport.Patience));
            time.Advance(IdleTimeout / 2);
        }

        Assert.Equal(Status.Ok, (await TestSupport.ReadReplyAsync(socket))?.Header.Status);

        // Requests with pauses under the timeout between them.
        for (var i = 0; i < 8; i++)
        {
            time.Advance(IdleTimeout / 2);
            Assert.Equal(new byte[] { (byte)i }, await PingAsync(socket, [(byte)i]));
        }

        Assert.False(log.ReportedIdle(socket));
    }

    [Fact]
    public async Task AConnectionWhoseHandlerHoldsStateForItIsKeptUntilItLetsGo()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        var handler = new TestHandler { Holding = true };
        using var server = new FrameServer("test", new FrameServerOptions { IdleTimeout = IdleTimeout, TimeProvider = time }, handler, log);
        server.Start();
        using var socket = await TestSupport.ConnectRawAsync(server.EndPoint);
        Assert.Equal(new byte[] { 1 }, await PingAsync(socket, [1]));

        for (var i = 0; i < 16; i++)
        {
            time.Advance(Step);
        }

        Assert.False(log.ReportedIdle(socket));
        Assert.Equal(new byte[] { 2 }, await PingAsync(socket, [2]));

        handler.Holding = false;
        await TestSupport.WaitUntilAsync(
            () =>
            {
                time.Advance(Step);
                return Task.FromResult(log.ReportedIdle(socket));
            },
            "the connection is closed once nothing holds it");
        Assert.True(await TestSupport.IsClosedAsync(socket));
    }

    /// <summary>A large put holds a write handle on its metadata connection between Create and Commit, however long its data takes.</summary>
    [Fact]
    public async Task TheMetadataServerKeepsAConnectionWithAnOpenWrite()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        await using var cluster = await PocketCluster.StartAsync(
            new PocketClusterOptions { StorageNodes = 0, Listener = new FrameServerOptions { IdleTimeout = IdleTimeout, TimeProvider = time } },
            new CapturingLoggerFactory(log));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("open-write");
        var endPoint = new IPEndPoint(IPAddress.Loopback, cluster.Metadata.EndPoint.Port);

        using var writer = await TestSupport.ConnectRawAsync(endPoint);
        var create = new BodyWriter().Str("big").I64(-1).ToArray();
        await TestSupport.SendRawAsync(writer, [.. TestSupport.Header(Opcode.Create, create.Length, token: job.Token), .. create]);
        var created = await TestSupport.ReadReplyAsync(writer);
        Assert.Equal(Status.Ok, created?.Header.Status);
        var handle = new BodyReader(created!.Value.Body).U64();

        using var quiet = await TestSupport.ConnectRawAsync(endPoint);
        Assert.Empty(await PingAsync(quiet, []));
        await TestSupport.WaitUntilAsync(
            () =>
            {
                time.Advance(Step);
                return Task.FromResult(log.ReportedIdle(quiet));
            },
            "the quiet connection is closed");
        time.Advance(2 * IdleTimeout);
        Assert.False(log.ReportedIdle(writer));

        // Once the write is over, the connection is idle like any other.
        var abort = new BodyWriter().U64(handle).ToArray();
        await TestSupport.SendRawAsync(writer, [.. TestSupport.Header(Opcode.Abort, abort.Length, token: job.Token), .. abort]);
        Assert.Equal(Status.Ok, (await TestSupport.ReadReplyAsync(writer))?.Header.Status);
        await TestSupport.WaitUntilAsync(
            () =>
            {
                time.Advance(Step);
                return Task.FromResult(log.ReportedIdle(writer));
            },
            "the writer's connection is closed once its write is over");
    }

    [Fact]
    public async Task AZeroTimeoutKeepsConnectionsForeverAndANegativeOneIsRefused()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        using (var server = new FrameServer("test", new FrameServerOptions { IdleTimeout = TimeSpan.Zero, TimeProvider = time }, new TestHandler(), log))
        {
            server.Start();
            using var socket = await TestSupport.ConnectRawAsync(server.EndPoint);
            Assert.Equal(new byte[] { 1 }, await PingAsync(socket, [1]));
            time.Advance(TimeSpan.FromDays(1));
            Assert.Equal(new byte[] { 2 }, await PingAsync(socket, [2]));
            Assert.False(log.ReportedIdle(socket));
        }

        var refused = Assert.Throws<ArgumentException>(() => new FrameServer("test", new FrameServerOptions { IdleTimeout = TimeSpan.FromSeconds(-5) }, new TestHandler(), log));
        Assert.Contains("idle timeout", refused.Message, StringComparison.Ordinal);
        var stall = Assert.Throws<ArgumentException>(() => new FrameServer("test", new FrameServerOptions { ReplyStallTimeout = TimeSpan.FromSeconds(-5) }, new TestHandler(), log));
        Assert.Contains("reply stall timeout", stall.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new FrameServer("test", new FrameServerOptions { ReplyPauseBytes = 0 }, new TestHandler(), log));
    }

    /// <summary>
    /// A client's pooled connection closed by the server as idle is noticed (not connected any more) and replaced
    /// on the next request; a request handed to the closed connection itself fails as not sent, so it can be retried.
    /// </summary>
    [Fact]
    public async Task AClientReconnectsAfterTheServerClosedItsIdleConnection()
    {
        var time = new FakeTimeProvider();
        var log = new CapturingLogger();
        await using var cluster = await PocketCluster.StartAsync(
            new PocketClusterOptions { StorageNodes = 0, Listener = new FrameServerOptions { IdleTimeout = IdleTimeout, TimeProvider = time } },
            new CapturingLoggerFactory(log));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("idle");
        await job.PutAsync("a", new byte[] { 42 });
        var first = client.MetadataConnection!;

        await TestSupport.WaitUntilAsync(
            () =>
            {
                time.Advance(Step);
                return Task.FromResult(!first.IsConnected);
            },
            "the client sees its idle connection closed");
        Assert.Contains(log.Lines, line => line.Contains("idle for", StringComparison.Ordinal));
        var lost = await Assert.ThrowsAsync<ConnectionLostException>(async () => await first.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default));
        Assert.True(lost.NotSent);

        using var cts = TestSupport.Timeout();
        Assert.Equal(new byte[] { 42 }, await job.GetAsync("a", cancellationToken: cts.Token));
        Assert.NotSame(first, client.MetadataConnection);
    }

    private static async Task<byte[]> PingAsync(Socket socket, byte[] body)
    {
        await TestSupport.SendRawAsync(socket, [.. TestSupport.Header(Opcode.Ping, body.Length), .. body]);
        var reply = await TestSupport.ReadReplyAsync(socket);
        Assert.NotNull(reply);
        return reply.Value.Body;
    }

    /// <summary>
    /// Ping echoes; WriteExtent takes its body straight from the socket a piece at a time, telling each once it is in;
    /// Count waits to be let go. While <see cref="Holding"/>, it holds state for every connection.
    /// </summary>
    private sealed class TestHandler : IFrameHandler
    {
        public const int Piece = 1024;

        private readonly byte[] _piece = new byte[Piece];
        private int _told;

        public SemaphoreSlim PieceRead { get; } = new(0);

        public SemaphoreSlim HoldStarted { get; } = new(0);

        public SemaphoreSlim Hold { get; } = new(0);

        public volatile bool Holding;

        public bool HoldsState(FrameContext connection) => Holding;

        public int PrefixLength(in FrameHeader header) => header.Opcode == Opcode.WriteExtent ? 0 : -1;

        public FrameAdmission Admit(FrameContext frame)
        {
            _told = 0;
            return FrameAdmission.Direct;
        }

        public Span<byte> BodyDestination(FrameContext frame, int received)
        {
            TellPieces(received / Piece);
            return _piece.AsSpan(0, Piece - (received % Piece));
        }

        public void Handle(FrameContext frame)
        {
            switch (frame.Header.Opcode)
            {
                case Opcode.Ping:
                    frame.Reply(Status.Ok, frame.ReadBody());
                    break;
                case Opcode.WriteExtent:
                    TellPieces(frame.Header.BodyLength / Piece);
                    frame.Reply(Status.Ok);
                    break;
                default:
                    HoldStarted.Release();
                    frame.Reply(Hold.Wait(TestSupport.Patience) ? Status.Ok : Status.InternalError);
                    break;
            }
        }

        public void OnDisconnected(FrameContext connection)
        {
        }

        private void TellPieces(int pieces)
        {
            while (_told < pieces)
            {
                _told++;
                PieceRead.Release();
            }
        }
    }
}

/// <summary>Keeps every log line, formatted, as it is written.</summary>
internal sealed class CapturingLogger : ILogger
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines;

    /// <summary>True once a server logged closing the connection of this client socket (known by its port) as idle.</summary>
    public bool ReportedIdle(Socket client) =>
        _lines.Any(line => line.Contains($":{((IPEndPoint)client.LocalEndPoint!).Port}: idle for", StringComparison.Ordinal));

    /// <summary>
    /// The reply bytes a server said it left unread when it closed a connection whose peer read none of them (see
    /// <c>FrameServerOptions.ReplyStallTimeout</c>); null until a server logged that.
    /// </summary>
    public int? StalledReplyBytes()
    {
        var line = _lines.FirstOrDefault(l => l.Contains("the peer reads none of them", StringComparison.Ordinal));
        return line is null ? null : int.Parse(Regex.Match(line, @"(\d+) bytes of replies unread").Groups[1].Value, CultureInfo.InvariantCulture);
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        _lines.Enqueue(formatter(state, exception));
}

internal sealed class CapturingLoggerFactory(CapturingLogger logger) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => logger;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }
}
