using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

public sealed class FrameConnectionTests
{
    /// <summary>
    /// Replies complete callers inline on a client loop thread. A caller that blocks in its continuation on another
    /// request of the same connection must not deadlock the connection (nor the loops).
    /// </summary>
    [Fact]
    public async Task ABlockingContinuationDoesNotStallTheConnection()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("blocking");
        await job.PutAsync("a", new byte[] { 1 });
        await job.PutAsync("b", new byte[] { 2 });

        // The reply can arrive before the caller awaits it, and then the continuation runs on the caller's thread,
        // not a loop's: try until one ran on a loop (each attempt must be right either way).
        var onReader = 0;
        for (var attempt = 0; attempt < 200 && onReader < 3; attempt++)
        {
            var result = await job.GetAsync("a", cancellationToken: timeout.Token).AsTask().ContinueWith(
                first =>
                {
                    // Sync-over-async inside a continuation that runs on a client loop: only the watchdog's hand-over
                    // of the connection to another loop lets the second reply arrive.
                    var thread = Thread.CurrentThread.Name ?? string.Empty;
                    var second = job.GetAsync("b").AsTask().Result;
                    return (Sum: first.Result[0] + second[0], Thread: thread);
                },
                timeout.Token,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default).WaitAsync(timeout.Token);

            Assert.Equal(3, result.Sum);
            if (result.Thread.StartsWith("pocket client loop", StringComparison.Ordinal))
            {
                onReader++;
            }
        }

        Assert.True(onReader > 0, "no continuation ran on a client loop in 200 attempts");
        Assert.Equal(2, await job.CountAsync(cancellationToken: timeout.Token));
    }

    /// <summary>
    /// A continuation blocks its client loop while more replies already sit in the connection's buffer (one read took
    /// them all): the watchdog hands the connection to another loop, which must run those replies at once, although
    /// nothing more arrives on the socket. Under load their callers waited out the request timeout ("did not answer
    /// ListNodes within 30 s"). The server is a bare socket, so that the three replies go out in one write.
    /// </summary>
    [Fact]
    public async Task RepliesAlreadyReadAreRunAfterAHandOverWithoutMoreInput()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var done = new TaskCompletionSource();
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync(timeout.Token);
            var requests = new byte[3 * FrameHeader.Size];
            for (var received = 0; received < requests.Length;)
            {
                var n = await socket.ReceiveAsync(requests.AsMemory(received), timeout.Token);
                Assert.NotEqual(0, n);
                received += n;
            }

            var replies = new byte[requests.Length];
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal(Status.Ok, FrameHeader.TryRead(requests.AsSpan(i * FrameHeader.Size, FrameHeader.Size), 0, out var request));
                new FrameHeader(request.Opcode, FrameFlags.Reply, Status.Ok, 0, request.RequestId, JobToken.None).Write(replies.AsSpan(i * FrameHeader.Size));
            }

            await socket.SendAsync(replies, timeout.Token);

            // Open until the client is done: a close would wake its loops and hide a stranded reply.
            await done.Task.WaitAsync(timeout.Token);
        });

        await using var connection = await FrameConnection.ConnectAsync(
            "127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, new FrameConnectionOptions { RequestTimeout = System.Threading.Timeout.InfiniteTimeSpan }, timeout.Token);
        Task<FrameReply>? second = null;
        Task<FrameReply>? third = null;
        var first = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask().ContinueWith(
            reply =>
            {
                // Sync-over-async on the loop that read all three replies: only another loop can complete the others.
                var thread = Thread.CurrentThread.Name ?? string.Empty;
                var others = Task.WhenAll(second!, third!).Wait(TimeSpan.FromSeconds(60));
                return (Status: reply.Result.Status, Thread: thread, Others: others);
            },
            timeout.Token,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        second = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask();
        third = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token).AsTask();

        var result = await first.WaitAsync(timeout.Token);
        done.SetResult();
        await server;

        Assert.Equal(Status.Ok, result.Status);
        Assert.StartsWith("pocket client loop", result.Thread, StringComparison.Ordinal);
        Assert.True(result.Others, "the replies read with the first one were not run while its continuation blocked");
        Assert.Equal(Status.Ok, (await second).Status);
        Assert.Equal(Status.Ok, (await third).Status);
    }

    /// <summary>
    /// A reply longer than the caller's buffer is read into an array of its own: all of it, or with a reply head, its
    /// first bytes into the buffer and only the rest into the array (a whole get's result, so it is not copied again).
    /// The server is a bare socket that answers every request with the same 100 bytes, sent in two writes split inside
    /// the head.
    /// </summary>
    [Fact]
    public async Task AReplyHeadGoesIntoTheBufferAndTheRestIntoAnArrayOfItsOwn()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var body = new byte[100];
        for (var i = 0; i < body.Length; i++)
        {
            body[i] = (byte)(i + 1);
        }

        const int Requests = 4;
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync(timeout.Token);
            socket.NoDelay = true;
            var header = new byte[FrameHeader.Size];
            for (var r = 0; r < Requests; r++)
            {
                for (var received = 0; received < header.Length;)
                {
                    var n = await socket.ReceiveAsync(header.AsMemory(received), timeout.Token);
                    Assert.NotEqual(0, n);
                    received += n;
                }

                Assert.Equal(Status.Ok, FrameHeader.TryRead(header, 0, out var request));
                var reply = new byte[FrameHeader.Size + body.Length];
                new FrameHeader(request.Opcode, FrameFlags.Reply, Status.Ok, body.Length, request.RequestId, JobToken.None).Write(reply);
                body.CopyTo(reply.AsSpan(FrameHeader.Size));
                await socket.SendAsync(reply.AsMemory(0, FrameHeader.Size + 3), timeout.Token);
                await socket.SendAsync(reply.AsMemory(FrameHeader.Size + 3), timeout.Token);
            }
        });

        await using var connection = await FrameConnection.ConnectAsync(
            "127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, new FrameConnectionOptions(), timeout.Token);

        var buffer = new byte[16];
        var headed = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: buffer, replyHead: 9, cancellationToken: timeout.Token);
        Assert.Equal(body.Length, headed.DataLength);
        Assert.Equal(body.AsSpan(0, 9).ToArray(), buffer.AsSpan(0, 9).ToArray());
        Assert.Equal(body.AsSpan(9).ToArray(), headed.Body);

        Array.Clear(buffer);
        var whole = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: buffer, cancellationToken: timeout.Token);
        Assert.Equal(body, whole.Body);
        Assert.All(buffer, b => Assert.Equal(0, b));

        // A reply that fits is read into the buffer whole, head or not.
        var large = new byte[128];
        var fits = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: large, replyHead: 9, cancellationToken: timeout.Token);
        Assert.Empty(fits.Body);
        Assert.Equal(body.Length, fits.DataLength);
        Assert.Equal(body, large.AsSpan(0, body.Length).ToArray());

        // A head longer than the buffer is the caller's mistake, refused before anything is sent.
        Assert.Throws<ArgumentOutOfRangeException>(() => connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: buffer, replyHead: 17, cancellationToken: timeout.Token));
        var after = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: buffer, replyHead: 16, cancellationToken: timeout.Token);
        Assert.Equal(body.AsSpan(16).ToArray(), after.Body);
        await server.WaitAsync(timeout.Token);
    }

    /// <summary>
    /// Plain connections are read by the process's few client loops, not by a thread each (a function talking to many
    /// nodes, or a fan-in benchmark, held a thread per connection): a thousand of them, each with a request answered.
    /// </summary>
    [Fact]
    public async Task AThousandPlainConnectionsAreReadWithoutAThreadEach()
    {
        const int count = 1_000;
        await using var cluster = await StartClusterAsync(nodes: 0);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("loops");
        var data = DataFor("k", 1024);
        await job.PutAsync("k", data);
        var get = new BodyWriter().Str("k").I64(0).I64(-1).ToArray();
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var connections = new List<FrameConnection>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                connections.Add(await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions()));
            }

            var replies = await Task.WhenAll(connections.Select(c => c.SendAsync(Opcode.Get, FrameFlags.None, job.Token, get).AsTask()));
            Assert.All(replies, r => Assert.Equal(Status.Ok, r.Status));
            Assert.All(replies, r => Assert.Equal(data, r.Body[^data.Length..]));

            // A thread per connection would have added a thousand.
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 300, $"threads grew from {threadsBefore} to {threads} with {count} client connections");
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }

        // The connections closed and left the loops; the client's own connection, on the same loops, is still served.
        Assert.Equal(data, await job.GetAsync("k"));
    }
}
