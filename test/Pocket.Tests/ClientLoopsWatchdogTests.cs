using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// The client loops' watchdog runs only while it has something to watch (a request in flight, a loop in a callback):
/// an idle process is not woken ten times a second. Each test has loops of its own on a fake clock, so the test
/// decides when the watchdog ticks, and a bare socket plays the server, so it decides when a request is answered.
/// The tests dispose their loops, which ends their threads and closes their descriptors.
/// </summary>
public sealed partial class ClientLoopsWatchdogTests
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(100);

    [Fact]
    public async Task DisposedLoopsEndTheirThreadsAndCloseTheirEpollSet()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);

        // The process's loops exist before these close their set, so they cannot be the set that takes its number next.
        _ = ClientLoops.Shared;
        var loops = new ClientLoops(2, new FakeTimeProvider());
        await using (var peer = await Peer.ConnectAsync(loops, new FrameConnectionOptions(), timeout.Token))
        {
            var reply = peer.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask();
            await peer.ReplyAsync(await peer.ReadRequestAsync(timeout.Token), "pong", timeout.Token);
            Assert.Equal("pong", Encoding.UTF8.GetString((await reply.WaitAsync(timeout.Token)).Body));
        }

        var threads = loops.Threads;
        Assert.Equal(2, threads.Count);
        Assert.All(threads, t => Assert.True(t.IsAlive));
        var epoll = loops.EpollDescriptor;
        Assert.True(IsClientLoopsEpollSet(epoll), $"descriptor {epoll} is not the loops' epoll set");

        loops.Dispose();

        Assert.All(threads, t => Assert.False(t.IsAlive, $"{t.Name} still runs"));
        Assert.False(IsClientLoopsEpollSet(epoll), $"the loops' epoll set ({epoll}) is still open");
        loops.Dispose();
        Assert.Throws<InvalidOperationException>(ClientLoops.Shared.Dispose);
    }

    /// <summary>
    /// True when the descriptor is an open epoll set that watches a client loops' stop eventfd (the kernel's own view,
    /// /proc/self/fdinfo: an entry whose data is all ones); a closed number, or one reused by anything else, is not.
    /// </summary>
    private static bool IsClientLoopsEpollSet(int fd)
    {
        try
        {
            return File.ReadLines($"/proc/self/fdinfo/{fd}").Any(line => line.StartsWith("tfd:", StringComparison.Ordinal) && StopEntry().IsMatch(line));
        }
        catch (IOException)
        {
            return false;
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"\bdata:\s*ffffffffffffffff\b")]
    private static partial System.Text.RegularExpressions.Regex StopEntry();

    [Fact]
    public async Task TheWatchdogStopsWhenNothingIsInFlightAndASendStartsItAgain()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        var time = new FakeTimeProvider();
        using var loops = new ClientLoops(1, time);
        await using var peer = await Peer.ConnectAsync(loops, new FrameConnectionOptions(), timeout.Token);

        // A connection with nothing in flight starts nothing.
        Assert.False(loops.IsWatching);
        time.Advance(TimeSpan.FromSeconds(5));
        Assert.False(loops.IsWatching);

        for (var round = 0; round < 2; round++)
        {
            var reply = peer.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask();
            Assert.True(loops.IsWatching, "a request went out and the watchdog is not running");
            await peer.ReplyAsync(await peer.ReadRequestAsync(timeout.Token), "pong", timeout.Token);
            Assert.Equal("pong", Encoding.UTF8.GetString((await reply.WaitAsync(timeout.Token)).Body));

            // The next tick finds nothing to watch once the loop is out of the reply's callback, and stops the timer.
            await WaitUntilAsync(() => Task.FromResult(!loops.AnyLoopBusy()), "the loop left the reply");
            time.Advance(Tick);
            Assert.False(loops.IsWatching, "nothing is in flight and the watchdog still runs");
        }
    }

    [Fact]
    public async Task ARequestSentAfterTheWatchdogStoppedStillTimesOut()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        var time = new FakeTimeProvider();
        using var loops = new ClientLoops(1, time);
        await using var peer = await Peer.ConnectAsync(loops, new FrameConnectionOptions { RequestTimeout = TimeSpan.FromSeconds(1) }, timeout.Token);

        var answered = peer.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask();
        await peer.ReplyAsync(await peer.ReadRequestAsync(timeout.Token), "pong", timeout.Token);
        await answered.WaitAsync(timeout.Token);
        await WaitUntilAsync(() => Task.FromResult(!loops.AnyLoopBusy()), "the loop left the reply");
        time.Advance(Tick);
        Assert.False(loops.IsWatching);

        // Never answered: the request restarts the watchdog, whose ticks find it late after a (fake) second.
        var unanswered = peer.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        await peer.ReadRequestAsync(timeout.Token);
        for (var i = 0; i < 10; i++)
        {
            Assert.False(unanswered.IsCompleted, $"the request ended after {i * Tick.TotalMilliseconds} ms of a 1 s timeout");
            time.Advance(Tick);
        }

        var late = await Assert.ThrowsAsync<RequestTimeoutException>(() => unanswered.WaitAsync(timeout.Token));
        Assert.Equal(Opcode.Ping, late.Opcode);

        // The late request left the table: nothing is left to watch.
        await WaitUntilAsync(() => Task.FromResult(!loops.AnyLoopBusy()), "no loop is busy");
        time.Advance(Tick);
        Assert.False(loops.IsWatching);
    }

    /// <summary>
    /// The only loop runs a reply's continuation, which waits (sync-over-async) for a reply on another connection: only
    /// a loop the watchdog adds can read that one. The watchdog had stopped before; the first request starts it.
    /// </summary>
    [Fact]
    public async Task ALoopBlockedByACallerGetsAnotherLoopAfterTheWatchdogHadStopped()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        var time = new FakeTimeProvider();
        using var loops = new ClientLoops(1, time);
        var options = new FrameConnectionOptions { RequestTimeout = System.Threading.Timeout.InfiniteTimeSpan };
        await using var first = await Peer.ConnectAsync(loops, options, timeout.Token);
        await using var second = await Peer.ConnectAsync(loops, options, timeout.Token);
        time.Advance(Tick);
        Assert.False(loops.IsWatching);

        var blocked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outer = first.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask().ContinueWith(
            reply =>
            {
                var thread = Thread.CurrentThread.Name ?? string.Empty;
                var inner = second.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
                blocked.SetResult();
                var answered = inner.Wait(Patience);
                return (Thread: thread, Outer: Encoding.UTF8.GetString(reply.Result.Body), InnerAnswered: answered);
            },
            timeout.Token,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

        // The continuation is attached before the reply is sent, so it runs on the loop that reads the reply.
        await first.ReplyAsync(await first.ReadRequestAsync(timeout.Token), "outer", timeout.Token);
        await blocked.Task.WaitAsync(timeout.Token);
        await second.ReplyAsync(await second.ReadRequestAsync(timeout.Token), "inner", timeout.Token);

        // The only loop has been in the callback for a tick: the watchdog starts another, which reads the inner reply.
        time.Advance(Tick);
        time.Advance(Tick);
        var result = await outer.WaitAsync(timeout.Token);
        Assert.StartsWith("pocket client loop", result.Thread, StringComparison.Ordinal);
        Assert.Equal("outer", result.Outer);
        Assert.True(result.InnerAnswered, "the reply for the blocked caller was not read by another loop");
    }

    /// <summary>
    /// A reply completes its caller inline on the loop that read it, and the loop runs under no caller's execution
    /// context: not that of the caller whose first connection started the loops (whose async-locals, a web request's
    /// Activity say, the loop threads would otherwise keep for the life of the process and show to every completion).
    /// The continuation here is attached without a context of its own, so what it sees is the loop thread's.
    /// </summary>
    [Fact]
    public async Task AReplyCompletesOnTheLoopUnderNoCallersAsyncLocals()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        var local = new AsyncLocal<string?> { Value = "the first caller's" };
        using var loops = new ClientLoops(1, new FakeTimeProvider());
        await using var peer = await Peer.ConnectAsync(loops, new FrameConnectionOptions(), timeout.Token);

        var seen = WhereItCompletes(peer.Connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token), local);
        await peer.ReplyAsync(await peer.ReadRequestAsync(timeout.Token), "pong", timeout.Token);
        var (thread, value, body) = await seen.WaitAsync(timeout.Token);
        Assert.Equal("pong", body);
        Assert.StartsWith("pocket client loop", thread, StringComparison.Ordinal);
        Assert.Null(value);
    }

    /// <summary>
    /// The thread a request's completion runs on, the async-local's value there and the reply: the continuation is
    /// attached with no scheduling context and no execution context of its own (as an awaiter's UnsafeOnCompleted
    /// after ConfigureAwait(false)), so it runs inline where the request completes, under that thread's own context.
    /// </summary>
    private static Task<(string Thread, string? Local, string Reply)> WhereItCompletes(ValueTask<FrameReply> request, AsyncLocal<string?> local)
    {
        var seen = new TaskCompletionSource<(string Thread, string? Local, string Reply)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var awaiter = request.ConfigureAwait(false).GetAwaiter();
        awaiter.UnsafeOnCompleted(() =>
        {
            try
            {
                var reply = awaiter.GetResult();
                seen.SetResult((Thread.CurrentThread.Name ?? string.Empty, local.Value, Encoding.UTF8.GetString(reply.Body)));
            }
            catch (Exception ex)
            {
                seen.SetException(ex);
            }
        });
        return seen.Task;
    }

    /// <summary>A connection on the given loops and the socket that plays its server.</summary>
    private sealed class Peer : IAsyncDisposable
    {
        private readonly byte[] _header = new byte[FrameHeader.Size];

        private Peer(FrameConnection connection, Socket server)
        {
            Connection = connection;
            Server = server;
        }

        public FrameConnection Connection { get; }

        public Socket Server { get; }

        public static async Task<Peer> ConnectAsync(ClientLoops loops, FrameConnectionOptions options, CancellationToken cancellationToken)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, options with { Loops = loops }, cancellationToken);
            var server = await listener.AcceptSocketAsync(cancellationToken);
            return new Peer(await connecting, server);
        }

        public async Task<uint> ReadRequestAsync(CancellationToken cancellationToken)
        {
            Assert.True(await ReadExactlyAsync(Server, _header, cancellationToken), "the client closed the connection");
            Assert.Equal(Status.Ok, FrameHeader.TryRead(_header, 0, out var request));
            return request.RequestId;
        }

        public async Task ReplyAsync(uint requestId, string body, CancellationToken cancellationToken)
        {
            var bytes = Encoding.UTF8.GetBytes(body);
            var frame = new byte[FrameHeader.Size + bytes.Length];
            new FrameHeader(Opcode.Ping, FrameFlags.Reply, Status.Ok, bytes.Length, requestId, JobToken.None).Write(frame);
            bytes.CopyTo(frame.AsSpan(FrameHeader.Size));
            await Server.SendAsync(frame, SocketFlags.None, cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            await Connection.DisposeAsync();
            Server.Dispose();
        }
    }
}
