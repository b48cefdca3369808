using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// The server's event loops accept (there is no accept thread): a new connection's first turn runs on the loop that
/// accepted it, a connect storm is taken a batch at a time between established connections' turns, and a stopping
/// server accepts nothing and leaves no thread behind.
/// </summary>
public sealed partial class LoopAcceptTests
{
    private const uint Gate = 1;
    private const uint Probe = 1_000_000;

    [Fact]
    public async Task AFirstRequestSentBeforeTheAcceptIsReadByTheLoopThatAcceptedIt()
    {
        const int Clients = 40;
        var handler = new GatedPingHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);

        // Both loops are held in a handler: connects queue in the kernel meanwhile, unaccepted.
        using var first = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(first, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.True(handler.WaitEntered(cts.Token), "the first gated frame never reached the handler");
        using var second = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(second, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.True(handler.WaitEntered(cts.Token), "the second gated frame never reached the handler");
        var before = server.FirstReadsAtAccept;

        // Each client's request is in the server's receive queue (acknowledged: nothing left in the client's send
        // queue) before either loop is free to accept.
        var clients = new List<Socket>();
        try
        {
            await QueueFirstRequestsAsync(server.EndPoint, Clients, clients);

            Assert.Equal(before, server.FirstReadsAtAccept);
            handler.OpenGate.Set();
            for (var i = 0; i < Clients; i++)
            {
                Assert.Equal(Probe + (uint)i, await ReadReplyIdAsync(clients[i], cts.Token));
            }

            // Every one was read in the turn its accepting loop ran at once, with no epoll event for its input.
            Assert.Equal(before + Clients, server.FirstReadsAtAccept);
        }
        finally
        {
            handler.OpenGate.Set();
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task AConnectionJoinsEpollAfterItsFirstTurnAndItsNextRequestsStillArrive()
    {
        const int Clients = 12;
        Assert.True(Clients <= LoopAcceptor.AcceptsPerWake);
        var handler = new GatedPingHandler { RecordWatched = true };
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);
        using var gate = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(gate, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.True(handler.WaitEntered(cts.Token), "the gated frame never reached the handler");
        var clients = new List<Socket>();
        try
        {
            // Each request is in the server's receive queue before the loop is free to accept.
            await QueueFirstRequestsAsync(server.EndPoint, Clients, clients);

            var before = server.FirstReadsAtAccept;
            handler.OpenGate.Set();
            for (var i = 0; i < Clients; i++)
            {
                Assert.Equal(Probe + (uint)i, await ReadReplyIdAsync(clients[i], cts.Token));
            }

            // Each first request was read and answered by the accepting turn, with the connection not yet in the epoll
            // set: an edge-triggered ADD before the turn raised an event (waking the other loop) for that very input.
            Assert.Equal(before + Clients, server.FirstReadsAtAccept);
            for (var i = 0; i < Clients; i++)
            {
                Assert.False(handler.WatchedAt[Probe + (uint)i], $"client {i} was in the epoll set during its first turn");
            }

            // Added once the turn was done: later requests arrive by events.
            for (var round = 2u; round <= 3; round++)
            {
                for (var i = 0; i < Clients; i++)
                {
                    await SendRawAsync(clients[i], Header(Opcode.Ping, 0, requestId: (Probe * round) + (uint)i));
                }

                for (var i = 0; i < Clients; i++)
                {
                    Assert.Equal((Probe * round) + (uint)i, await ReadReplyIdAsync(clients[i], cts.Token));
                    Assert.True(handler.WatchedAt[(Probe * round) + (uint)i], $"client {i} was not in the epoll set after its first turn");
                }
            }
        }
        finally
        {
            handler.OpenGate.Set();
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task AConnectionWhoseFirstTurnIsOffloadedStillGetsItsLaterRequests()
    {
        const int Clients = 8;
        var handler = new GatedPingHandler(offload: true) { RecordWatched = true };
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1, IoThreads = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);
        var clients = new List<Socket>();
        try
        {
            for (var i = 0; i < Clients; i++)
            {
                var client = await ConnectRawAsync(server.EndPoint);
                clients.Add(client);
                await SendRawAsync(client, Header(Opcode.Ping, 0, requestId: Probe + (uint)i));
            }

            for (var i = 0; i < Clients; i++)
            {
                Assert.Equal(Probe + (uint)i, await ReadReplyIdAsync(clients[i], cts.Token));
            }

            // Handed to the I/O pool in its first turn, each was in the epoll set before its loop let go of it.
            for (var round = 1u; round <= 3; round++)
            {
                for (var i = 0; i < Clients; i++)
                {
                    await SendRawAsync(clients[i], Header(Opcode.Ping, 0, requestId: (Probe * (round + 1)) + (uint)i));
                    Assert.Equal((Probe * (round + 1)) + (uint)i, await ReadReplyIdAsync(clients[i], cts.Token));
                }
            }

            // Each frame ran on the pool with its connection already in the epoll set (added before its loop handed it
            // over: the pool thread may let go of it, and only an event brings it back).
            Assert.Equal(Clients * 4, handler.Offloaded);
            Assert.All(handler.WatchedAt.Values, Assert.True);
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task AConnectStormBeyondTheAcceptBatchIsServedWhileAnEstablishedConnectionKeepsGettingAnswers()
    {
        const int Storm = 3_000;
        Assert.True(Storm > 10 * LoopAcceptor.AcceptsPerWake);
        var handler = new GatedPingHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(240);
        using var established = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(established, Header(Opcode.Ping, 0, requestId: Probe));
        Assert.Equal(Probe, await ReadReplyIdAsync(established, cts.Token));

        var answered = 0;
        var stormDone = new TaskCompletionSource();
        var answeredDuringStorm = 0;
        var pinging = Task.Run(async () =>
        {
            for (var i = 1u; !stormDone.Task.IsCompleted; i++)
            {
                await SendRawAsync(established, Header(Opcode.Ping, 0, requestId: Probe + i));
                Assert.Equal(Probe + i, await ReadReplyIdAsync(established, cts.Token));
                if (Volatile.Read(ref answered) < Storm)
                {
                    answeredDuringStorm++;
                }
            }
        }, cts.Token);

        // Every client connects at once and sends its request as soon as it is connected.
        var sockets = new Socket[Storm];
        try
        {
            await Task.WhenAll(Enumerable.Range(0, Storm).Select(i => Task.Run(async () =>
            {
                var socket = await ConnectRawAsync(server.EndPoint);
                sockets[i] = socket;
                await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: (uint)i));
                Assert.Equal((uint)i, await ReadReplyIdAsync(socket, cts.Token));
                Interlocked.Increment(ref answered);
            }, cts.Token)));
        }
        finally
        {
            stormDone.SetResult();
            await pinging;
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }

        Assert.Equal(Storm, answered);
        Assert.True(answeredDuringStorm > 0, "the established connection got no answer while the storm was served");
    }

    [Fact]
    public async Task AConnectionOverTheLimitIsClosedWithItsLogLine()
    {
        var logger = new CapturingLogger();
        using var server = new FrameServer("limited", new FrameServerOptions { EventLoops = 2, MaxConnections = 2 }, new GatedPingHandler(), logger);
        server.Start();
        using var cts = Timeout(60);
        using var a = await ConnectRawAsync(server.EndPoint);
        using var b = await ConnectRawAsync(server.EndPoint);
        foreach (var socket in new[] { a, b })
        {
            await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: Probe));
            Assert.Equal(Probe, await ReadReplyIdAsync(socket, cts.Token));
        }

        using var over = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(over, Header(Opcode.Ping, 0, requestId: Probe));
        Assert.True(await IsClosedAsync(over), "a connection over the limit was served");
        Assert.Contains(logger.Lines, line => line == "limited refused a connection: 2 connections open");

        // The connections within the limit are still served.
        await SendRawAsync(a, Header(Opcode.Ping, 0, requestId: Probe + 1));
        Assert.Equal(Probe + 1, await ReadReplyIdAsync(a, cts.Token));
    }

    [Fact]
    public async Task AStormOverTheLimitLogsOneLineAndThenOnePerSecond()
    {
        var logger = new CapturingLogger();
        var time = new FakeTimeProvider();
        using var server = new FrameServer("stormed", new FrameServerOptions { EventLoops = 2, MaxConnections = 1, IdleTimeout = TimeSpan.Zero, TimeProvider = time }, new GatedPingHandler(), logger);
        server.Start();
        using var cts = Timeout(120);
        using var served = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(served, Header(Opcode.Ping, 0, requestId: Probe));
        Assert.Equal(Probe, await ReadReplyIdAsync(served, cts.Token));

        const int Storm = 40;
        for (var i = 0; i < Storm; i++)
        {
            using var over = await ConnectRawAsync(server.EndPoint);
            Assert.True(await IsClosedAsync(over), "a connection over the limit was served");
        }

        // One line for the first, the rest counted until the second is over.
        Assert.Single(logger.Lines, line => line == "stormed refused a connection: 1 connections open");
        Assert.DoesNotContain(logger.Lines, line => line.Contains("more connections", StringComparison.Ordinal));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Single(logger.Lines, line => line == $"stormed refused {Storm - 1} more connections in the last 1 s: 1 connections open");

        // A second with no refusal ends the count: the next refusal has its own line again.
        time.Advance(TimeSpan.FromSeconds(1));
        using (var late = await ConnectRawAsync(server.EndPoint))
        {
            Assert.True(await IsClosedAsync(late), "a connection over the limit was served");
        }

        Assert.Equal(2, logger.Lines.Count(line => line == "stormed refused a connection: 1 connections open"));
        Assert.Single(logger.Lines, line => line.Contains("more connections", StringComparison.Ordinal));

        // The connection within the limit is still served.
        await SendRawAsync(served, Header(Opcode.Ping, 0, requestId: Probe + 1));
        Assert.Equal(Probe + 1, await ReadReplyIdAsync(served, cts.Token));
    }

    [Fact]
    public async Task AServerStoppedWhileConnectsArriveLeavesNoThreadAndNoListener()
    {
        // Thread names are cut to 15 bytes by the kernel: a short, unique server name.
        const string Name = "acstop";
        var server = new FrameServer(Name, new FrameServerOptions { EventLoops = 2 }, new GatedPingHandler(), NullLogger.Instance);
        server.Start();
        var endPoint = server.EndPoint;
        using var cts = Timeout(120);

        // The loops accept: a plain server has its loop threads and no accept thread.
        Assert.Equal(new[] { $"{Name} loop 0", $"{Name} loop 1" }, ThreadsNamed(Name).Order(StringComparer.Ordinal));
        using var stop = new CancellationTokenSource();
        var served = 0;
        var connecting = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var socket = await ConnectRawAsync(endPoint);
                    await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: Probe));
                    if (await ReadReplyAsync(socket) is not null)
                    {
                        Interlocked.Increment(ref served);
                    }
                }
                catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException)
                {
                    // Refused or reset once the server stops.
                }
            }
        })).ToArray();

        await WaitUntilAsync(() => Task.FromResult(Volatile.Read(ref served) >= 20), "connects were served before the stop");
        server.Dispose();
        Assert.Equal(0, server.ConnectionCount);
        await WaitUntilAsync(() => Task.FromResult(ThreadsNamed(Name).Count == 0), "the server's threads ended");
        stop.Cancel();
        await Task.WhenAll(connecting);

        // No listener: a connect is refused.
        using var late = new Socket(SocketType.Stream, ProtocolType.Tcp);
        var refused = await Assert.ThrowsAsync<SocketException>(async () => await late.ConnectAsync(endPoint, cts.Token));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    private static List<string> ThreadsNamed(string prefix) =>
        [.. Directory.GetDirectories("/proc/self/task")
            .Select(task =>
            {
                try
                {
                    return File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n');
                }
                catch (IOException)
                {
                    return "";
                }
            })
            .Where(name => name.StartsWith(prefix + " ", StringComparison.Ordinal))];

    private static async Task<uint> ReadReplyIdAsync(Socket socket, CancellationToken cancellationToken)
    {
        var bytes = new byte[FrameHeader.Size];
        Assert.True(await ReadExactlyAsync(socket, bytes, cancellationToken), "the server closed the connection");
        Assert.Equal(Status.Ok, FrameHeader.TryRead(bytes, int.MaxValue, out var header));
        Assert.Equal(Status.Ok, header.Status);
        return header.RequestId;
    }

    /// <summary>
    /// Connects <paramref name="count"/> clients into <paramref name="clients"/> (the caller disposes them), each sending
    /// a Ping with id Probe + its index, and waits until the server's kernel acknowledged every request: with the
    /// server's loops held in a handler, they wait unaccepted.
    /// </summary>
    private static async Task QueueFirstRequestsAsync(System.Net.IPEndPoint endPoint, int count, List<Socket> clients)
    {
        for (var i = 0; i < count; i++)
        {
            var client = await ConnectRawAsync(endPoint);
            clients.Add(client);
            await SendRawAsync(client, Header(Opcode.Ping, 0, requestId: Probe + (uint)i));
        }

        foreach (var client in clients)
        {
            await WaitUntilAsync(() => Task.FromResult(Unacknowledged(client) == 0), "the server's kernel acknowledged a client's request");
        }
    }

    /// <summary>Bytes the client sent that its peer's kernel has not acknowledged yet (SIOCOUTQ).</summary>
    private static int Unacknowledged(Socket socket)
    {
        const uint SiocOutQ = 0x5411;
        Assert.Equal(0, Ioctl(socket.Handle, SiocOutQ, out var pending));
        return pending;
    }

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(nint fd, nuint request, out int value);

    /// <summary>
    /// Answers Ping inline on the loop (or, with <c>offload</c>, every frame on the I/O pool); a frame with the gate's
    /// id holds its thread until the gate opens.
    /// </summary>
    private sealed class GatedPingHandler(bool offload = false) : IFrameHandler
    {
        private readonly SemaphoreSlim _entered = new(0);
        private int _offloaded;

        /// <summary>Records <see cref="WatchedAt"/> (reads the epoll set from /proc per request).</summary>
        public bool RecordWatched { get; init; }

        /// <summary>Whether the connection was in the epoll set while the handler ran, by request id.</summary>
        public System.Collections.Concurrent.ConcurrentDictionary<uint, bool> WatchedAt { get; } = new();

        /// <summary>Frames handled on the I/O pool.</summary>
        public int Offloaded => Volatile.Read(ref _offloaded);

        public ManualResetEventSlim OpenGate { get; } = new();

        /// <summary>Waits for one more gated frame to enter the handler.</summary>
        public bool WaitEntered(CancellationToken cancellationToken) => _entered.Wait(TimeSpan.FromSeconds(30), cancellationToken);

        public int PrefixLength(in FrameHeader header) => offload ? 0 : -1;

        public FrameAdmission Admit(FrameContext frame) => offload ? FrameAdmission.Blocking : FrameAdmission.Buffer;

        public void Handle(FrameContext frame)
        {
            if (offload && Thread.CurrentThread.Name?.Contains(" io ", StringComparison.Ordinal) == true)
            {
                Interlocked.Increment(ref _offloaded);
            }

            if (RecordWatched && frame.Header.RequestId >= Probe)
            {
                WatchedAt[frame.Header.RequestId] = frame.Watched;
            }

            if (frame.Header.RequestId == Gate)
            {
                _entered.Release();
                OpenGate.Wait(TimeSpan.FromSeconds(60));
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
