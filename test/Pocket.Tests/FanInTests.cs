using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Thousands of independent connections (serverless functions each open their own) on the event-loop servers:
/// every request is served, threads stay bounded, stalled or greedy peers hold no thread and only bounded memory,
/// and nothing unauthorised is buffered. Real sockets; bounds on counts and bytes, never on time.
/// </summary>
public sealed class FanInTests
{
    private const int Connections = 5_000;

    [Fact]
    public async Task FiveThousandConnectionsEachPutAndGetOnTheMetadataServer()
    {
        await using var cluster = await StartClusterAsync(nodes: 0);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("fan-in");
        var server = cluster.Metadata.Listener;
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;

        // The cluster's own connections (the client's, the node's registration) stay throughout.
        var own = server.ConnectionCount;
        var sockets = await ConnectManyAsync(cluster.Metadata.EndPoint, Connections);
        try
        {
            await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own + Connections), "the server has accepted every connection");
            await ForEachAsync(sockets, async (socket, i) =>
            {
                var key = $"k{i}";
                var data = DataFor(key, 1024);
                var put = new BodyWriter().Str(key).U32((uint)data.Length).ToArray();
                await SendRawAsync(socket, [.. Header(Opcode.PutSmall, put.Length + data.Length, requestId: 1, token: job.Token), .. put, .. data]);
                Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))?.Header.Status);
                var get = new BodyWriter().Str(key).I64(0).I64(-1).ToArray();
                await SendRawAsync(socket, [.. Header(Opcode.Get, get.Length, requestId: 2, token: job.Token), .. get]);
                var reply = await ReadReplyAsync(socket);
                Assert.Equal(Status.Ok, reply?.Header.Status);
                Assert.Equal(data, reply!.Value.Body[^data.Length..]);
            });

            // A thread per connection would have added thousands.
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 200, $"threads grew from {threadsBefore} to {threads} with {Connections} connections");
        }
        finally
        {
            CloseAll(sockets);
        }

        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own), "every connection is gone from the server");
        Assert.Equal(Connections, await job.CountAsync(""));
    }

    [Fact]
    public async Task FiveThousandConnectionsEachWriteAndReadOnAStorageNode()
    {
        const int blockSize = 4096;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: 64L << 20, o => o with { BlockSize = blockSize });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("fan-in-storage");
        var node = cluster.Nodes[0]!;

        // One object with a block for each connection; its write grants also read.
        using var metadata = await ConnectRawAsync(cluster.Metadata.EndPoint);
        var create = new BodyWriter().Str("big").I64((long)Connections * blockSize).ToArray();
        await SendRawAsync(metadata, [.. Header(Opcode.Create, create.Length, token: job.Token), .. create]);
        var created = await ReadReplyAsync(metadata);
        Assert.Equal(Status.Ok, created?.Header.Status);
        var reader = new BodyReader(created!.Value.Body);
        reader.U64();
        var count = reader.U32();
        var blocks = new List<(ExtentGrant Grant, int Within)>();
        for (var g = 0; g < count; g++)
        {
            var grant = ExtentGrant.Read(reader.Bytes(ExtentGrant.Size));
            for (var within = 0; within < grant.Length; within += blockSize)
            {
                blocks.Add((grant, within));
            }
        }

        Assert.True(blocks.Count >= Connections, $"{blocks.Count} blocks granted");
        var server = node.Listener;
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        var own = server.ConnectionCount;
        var sockets = await ConnectManyAsync(node.EndPoint, Connections);
        try
        {
            await ForEachAsync(sockets, async (socket, i) =>
            {
                var (grant, within) = blocks[i];
                var data = DataFor($"b{i}", 1024);
                var head = new byte[ExtentGrant.Size];
                grant.Write(head);
                var write = new BodyWriter().Bytes(head).I32(within).ToArray();
                await SendRawAsync(socket, [.. Header(Opcode.WriteExtent, write.Length + data.Length, requestId: 1), .. write, .. data]);
                Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))?.Header.Status);
                var read = new BodyWriter().Bytes(head).I32(within).I32(data.Length).ToArray();
                await SendRawAsync(socket, [.. Header(Opcode.ReadExtent, read.Length, requestId: 2), .. read]);
                var reply = await ReadReplyAsync(socket);
                Assert.Equal(Status.Ok, reply?.Header.Status);
                Assert.Equal(data, reply!.Value.Body);
            });

            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 200, $"threads grew from {threadsBefore} to {threads} with {Connections} connections");
        }
        finally
        {
            CloseAll(sockets);
        }

        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own), "every connection is gone from the node");
    }

    [Fact]
    public async Task AClientThatNeverReadsItsRepliesIsPausedWithinTheBoundThenClosedAndOthersAreServed()
    {
        const int bound = 1 << 20;
        var stall = TimeSpan.FromSeconds(30);
        var log = new CapturingLogger();
        var time = new FakeTimeProvider();
        await using var cluster = await PocketCluster.StartAsync(
            new PocketClusterOptions
            {
                StorageNodes = 0,
                Listener = new FrameServerOptions { MaxReplyBacklog = bound, ReplyStallTimeout = stall, IdleTimeout = TimeSpan.Zero, TimeProvider = time },
            },
            new CapturingLoggerFactory(log));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("greedy");
        await job.PutAsync("a", DataFor("a", 1024));
        var server = cluster.Metadata.Listener;

        using var greedy = await ConnectRawAsync(cluster.Metadata.EndPoint);
        var get = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
        byte[] one = [.. Header(Opcode.Get, get.Length, token: job.Token), .. get];
        var burst = Burst(1000, _ => one);

        // 100,000 requests, never a reply read: the server stops reading them once its replies wait, so the sender's
        // requests back up in the kernel's buffers and its sends block until the server closes the connection.
        var sending = Task.Run(async () =>
        {
            for (var i = 0; i < 100 && greedy.Connected; i++)
            {
                await SendRawAsync(greedy, burst);
            }
        });

        await WaitUntilAsync(() => Task.FromResult(server.ReplyPauses > 0), "the server stops reading the connection that does not read");
        Assert.Equal(DataFor("a", 1024), await job.GetAsync("a"));

        // Nothing is read for the stall timeout on the server's clock: closed, with how much it left unread. Each step
        // runs four checks back to back, faster than the owner closes it: counted and logged once all the same.
        await WaitUntilAsync(
            () =>
            {
                time.Advance(stall);
                return Task.FromResult(log.StalledReplyBytes() is not null);
            },
            "the server closes the connection that does not read");
        await sending.WaitAsync(Patience);
        Assert.InRange(log.StalledReplyBytes()!.Value, 1, bound);
        Assert.DoesNotContain(log.Lines, l => l.Contains("over the bound", StringComparison.Ordinal));
        Assert.Equal(1, server.StalledReaders);
        Assert.Single(log.Lines, l => l.Contains("unread", StringComparison.Ordinal));

        // Meanwhile and after, everyone else is served.
        Assert.Equal(DataFor("a", 1024), await job.GetAsync("a"));
        await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == 1), "only the client's own connection is left");
    }

    /// <summary>
    /// A client that asks for many times the reply bound at once and reads at its own pace (a reader thread, several
    /// functions sharing one connection): the server stops handling its requests while replies wait, and serves all of
    /// them, in order, on the same connection. Before, the connection was closed at the bound. 32 MB is asked for, far
    /// more than the kernel's socket buffers take before the client reads (4 MiB of send buffer here).
    /// </summary>
    [Fact]
    public async Task AClientThatAsksForMoreThanTheBoundAtOnceIsServedInFullAtThePaceItReads()
    {
        const int bound = 1 << 20;
        const int gets = 1000;
        const int size = 32 << 10;
        await using var cluster = await StartClusterAsync(nodes: 0, configure: o => o with { Listener = new FrameServerOptions { MaxReplyBacklog = bound } });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("pipelined");
        await job.PutAsync("a", DataFor("a", size));
        var server = cluster.Metadata.Listener;

        using var socket = await ConnectRawAsync(cluster.Metadata.EndPoint);
        var get = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
        var data = DataFor("a", size);

        // 32 MB of replies asked for before one is read.
        await SendRawAsync(socket, Burst(gets, i => [.. Header(Opcode.Get, get.Length, requestId: (uint)i, token: job.Token), .. get]));
        await WaitUntilAsync(() => Task.FromResult(server.ReplyPauses > 0), "the server stops reading while the replies wait");
        for (var i = 0; i < gets; i++)
        {
            var reply = await ReadReplyAsync(socket);
            Assert.True(reply is not null, $"the connection closed after {i} of {gets} replies");
            Assert.Equal(Status.Ok, reply.Value.Header.Status);
            Assert.Equal((uint)i, reply.Value.Header.RequestId);
            Assert.Equal(data, reply.Value.Body[^size..]);
        }

        await SendRawAsync(socket, Header(Opcode.Ping, 0));
        Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))?.Header.Status);
    }

    /// <summary>
    /// A peer that sends its requests and shuts its side (a batch, then "that is all") reads every reply before the
    /// server closes: the replies waiting at the end of its stream go out as it reads them. Before, the server
    /// closed at the end of the stream with what the socket had not taken unsent. The pause is set above the batch's
    /// 31 MB of replies, so the server handles all of it and reads the end of the stream while much of it still waits
    /// (with 15 MB and the end-of-stream wait taken out, 172 of 256 replies arrived).
    /// </summary>
    [Fact]
    public async Task APeerThatShutsItsSideAfterItsRequestsGetsEveryReply()
    {
        const int gets = 512;
        const int size = 60_000;
        await using var cluster = await StartClusterAsync(
            nodes: 0,
            configure: o => o with { Listener = new FrameServerOptions { MaxReplyBacklog = 96 << 20, ReplyPauseBytes = 40 << 20 } });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("batch");
        await job.PutAsync("a", DataFor("a", size));

        using var socket = await ConnectRawAsync(cluster.Metadata.EndPoint);
        var get = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
        var data = DataFor("a", size);
        byte[] one = [.. Header(Opcode.Get, get.Length, token: job.Token), .. get];
        await SendRawAsync(socket, Burst(gets, _ => one));
        socket.Shutdown(SocketShutdown.Send);
        for (var i = 0; i < gets; i++)
        {
            var reply = await ReadReplyAsync(socket);
            Assert.True(reply is not null, $"the connection closed after {i} of {gets} replies");
            Assert.Equal(data, reply.Value.Body[^size..]);
        }

        Assert.Null(await ReadReplyAsync(socket));
    }

    /// <summary>
    /// An ssd node reads on its I/O pool: a client that asks one connection for 48 MiB of 1 MiB reads before it reads
    /// a reply is held back there too, and gets every byte (before, closed at the 16 MiB bound).
    /// </summary>
    [Fact]
    public async Task PipelinedReadsFromAnSsdNodeAreHeldBackOnTheIoPoolAndServedInFull()
    {
        const int reads = 48;
        const int size = 1 << 20;
        var directory = Directory.CreateTempSubdirectory("pocket-pause-");
        try
        {
            await using var cluster = await StartClusterAsync(nodes: 0, configure: o => o with { DataDirectory = directory.FullName });
            var node = cluster.Nodes[await cluster.AddNodeAsync(64L << 20, tier: NodeTier.Ssd)]!;
            await using var client = await cluster.ConnectAsync();
            var job = await cluster.Admin(client).RegisterJobAsync("ssd-reads", NodeTier.Ssd);

            // One 1 MiB object written through its grant (write grants also read).
            using var metadata = await ConnectRawAsync(cluster.Metadata.EndPoint);
            var create = new BodyWriter().Str("big").I64(size).ToArray();
            await SendRawAsync(metadata, [.. Header(Opcode.Create, create.Length, token: job.Token), .. create]);
            var created = await ReadReplyAsync(metadata);
            Assert.Equal(Status.Ok, created?.Header.Status);
            var reader = new BodyReader(created!.Value.Body);
            reader.U64();
            Assert.Equal(1u, reader.U32());
            var grant = new byte[ExtentGrant.Size];
            ExtentGrant.Read(reader.Bytes(ExtentGrant.Size)).Write(grant);
            var data = DataFor("big", size);
            using var socket = await ConnectRawAsync(node.EndPoint);
            var write = new BodyWriter().Bytes(grant).I32(0).ToArray();
            await SendRawAsync(socket, [.. Header(Opcode.WriteExtent, write.Length + size, requestId: 1), .. write, .. data]);
            Assert.Equal(Status.Ok, (await ReadReplyAsync(socket))?.Header.Status);

            var read = new BodyWriter().Bytes(grant).I32(0).I32(size).ToArray();
            byte[] one = [.. Header(Opcode.ReadExtent, read.Length, requestId: 2), .. read];
            await SendRawAsync(socket, Burst(reads, _ => one));
            await WaitUntilAsync(() => Task.FromResult(node.Listener.ReplyPauses > 0), "the node holds the connection's reads back");
            for (var i = 0; i < reads; i++)
            {
                var reply = await ReadReplyAsync(socket);
                Assert.True(reply is not null, $"the connection closed after {i} of {reads} replies");
                Assert.Equal(Status.Ok, reply.Value.Header.Status);
                Assert.Equal(data, reply.Value.Body);
            }
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task HalfFrameSendersHoldNoThread()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        var threadsBefore = Process.GetCurrentProcess().Threads.Count;
        const int senders = 500;
        var sockets = await ConnectManyAsync(cluster.Nodes[0]!.EndPoint, senders);
        try
        {
            // Half a header on some, a header and half a body on the others; then silence.
            await ForEachAsync(sockets, (socket, i) => i % 2 == 0
                ? SendRawAsync(socket, Header(Opcode.Ping, 10)[..(FrameHeader.Size / 2)])
                : SendRawAsync(socket, [.. Header(Opcode.Ping, 100), .. new byte[50]]));
            var threads = Process.GetCurrentProcess().Threads.Count;
            Assert.True(threads - threadsBefore < 100, $"threads grew from {threadsBefore} to {threads} with {senders} stalled senders");

            using var fresh = await ConnectRawAsync(cluster.Nodes[0]!.EndPoint);
            await SendRawAsync(fresh, Header(Opcode.Ping, 0));
            Assert.Equal(Status.Ok, (await ReadReplyAsync(fresh))?.Header.Status);
        }
        finally
        {
            CloseAll(sockets);
        }
    }

    /// <summary>
    /// Issue 14, failure 1: connections announcing 1 MiB bodies without credentials, sending all but the last byte.
    /// The storage node refuses a read body that is not a grant, offset and length before reading it; the metadata
    /// server reads no large body without a known token; and the buffering of admitted ones stays within its bound.
    /// </summary>
    [Fact]
    public async Task AnnouncedMegabyteBodiesWithoutCredentialsAreNotBuffered()
    {
        const int attackers = 600;
        const int body = 1 << 20;
        const long bound = 8L << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, configure: o => o with { Listener = new FrameServerOptions { MaxBufferedRequestBytes = bound } });
        var node = cluster.Nodes[0]!;
        var payload = new byte[body - 1];

        async Task FloodAsync(IPEndPoint endPoint, Opcode opcode, JobToken token, FrameServer server, Status expected)
        {
            var own = server.ConnectionCount;
            var sockets = await ConnectManyAsync(endPoint, attackers);
            try
            {
                await ForEachAsync(sockets, async (socket, i) =>
                {
                    await SendRawAsync(socket, Header(opcode, body, token: token));
                    var sending = SendRawAsync(socket, payload);
                    var reply = await ReadReplyAsync(socket);
                    Assert.True(reply?.Header.Status == expected, $"{opcode}: {reply?.Header.Status}");
                    Assert.True(server.BufferedRequestBytes <= bound, $"{server.BufferedRequestBytes} bytes buffered");
                    Assert.True(await IsClosedAsync(socket));
                    await sending;
                });
            }
            finally
            {
                CloseAll(sockets);
            }

            try
            {
                await WaitUntilAsync(() => Task.FromResult(server.ConnectionCount == own && server.BufferedRequestBytes == 0), "the flood's connections and buffers are released");
            }
            catch (Xunit.Sdk.FailException)
            {
                Assert.Equal((own, 0L), (server.ConnectionCount, server.BufferedRequestBytes));
                throw;
            }
        }

        await FloodAsync(node.EndPoint, Opcode.ReadExtent, JobToken.None, node.Listener, Status.BadRequest);
        await FloodAsync(cluster.Metadata.EndPoint, Opcode.RegisterNode, JobToken.NewRandom(), cluster.Metadata.Listener, Status.Unauthorized);

        // With the cluster token the bodies are admitted, and buffered only up to the server's bound: of sixteen
        // stalled 1 MiB bodies, eight fit the 8 MiB; the other eight are told so and closed.
        var sockets = await ConnectManyAsync(cluster.Metadata.EndPoint, 16);
        try
        {
            foreach (var socket in sockets)
            {
                await SendRawAsync(socket, [.. Header(Opcode.RegisterNode, body, token: cluster.Options.ClusterToken), .. payload]);
            }

            var replies = sockets.Select(ReadReplyQuietlyAsync).ToList();
            await WaitUntilAsync(() => Task.FromResult(replies.Count(r => r.IsCompleted) >= 8), "the requests over the bound are refused");
            Assert.All(replies.Where(r => r.IsCompleted), r => Assert.Equal(Status.CapacityExceeded, r.Result));
            Assert.True(cluster.Metadata.Listener.BufferedRequestBytes <= bound, $"{cluster.Metadata.Listener.BufferedRequestBytes} bytes buffered");
        }
        finally
        {
            CloseAll(sockets);
        }

        await WaitUntilAsync(() => Task.FromResult(cluster.Metadata.Listener.BufferedRequestBytes == 0), "the admitted buffers are released");
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("after-flood");
        await job.PutAsync("x", new byte[] { 1 });
        Assert.Equal(new byte[] { 1 }, await job.GetAsync("x"));
    }

    /// <summary>Issue 14, failure 6: a node that accepts and never answers gets the caller a typed timeout, not a hang.</summary>
    [Fact]
    public async Task ARequestToAnUnresponsiveServerTimesOut()
    {
        using var silent = new Socket(SocketType.Stream, ProtocolType.Tcp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        silent.Listen();
        var accepted = silent.AcceptAsync();
        var port = ((IPEndPoint)silent.LocalEndPoint!).Port;
        using var connection = await FrameConnection.ConnectAsync("127.0.0.1", port, new FrameConnectionOptions { RequestTimeout = TimeSpan.FromSeconds(1) });
        using var peer = await accepted;
        var timedOut = await Assert.ThrowsAsync<RequestTimeoutException>(async () => await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default));
        Assert.Equal(Opcode.Ping, timedOut.Opcode);
        Assert.Contains("did not answer", timedOut.Message, StringComparison.Ordinal);

        // The connection itself stays usable for a server that wakes up: a request answered in time completes.
        var next = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        var request = new byte[FrameHeader.Size * 2];
        var got = 0;
        while (got < request.Length)
        {
            got += await peer.ReceiveAsync(request.AsMemory(got), SocketFlags.None);
        }

        Assert.Equal(Status.Ok, FrameHeader.TryRead(request.AsSpan(FrameHeader.Size), int.MaxValue, out var second));
        var reply = new byte[FrameHeader.Size];
        new FrameHeader(Opcode.Ping, FrameFlags.Reply, Status.Ok, 0, second.RequestId, JobToken.None).Write(reply);
        await peer.SendAsync(reply, SocketFlags.None);
        Assert.Equal(Status.Ok, (await next.WaitAsync(Patience)).Status);
    }

    private static async Task<Status?> ReadReplyQuietlyAsync(Socket socket)
    {
        try
        {
            return (await ReadReplyAsync(socket))?.Header.Status;
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException or OperationCanceledException)
        {
            return null;
        }
    }

    private static async Task<Socket[]> ConnectManyAsync(IPEndPoint endPoint, int count)
    {
        var sockets = new Socket[count];
        using var gate = new SemaphoreSlim(256);
        await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
        {
            await gate.WaitAsync();
            try
            {
                sockets[i] = await ConnectRawAsync(endPoint);
            }
            finally
            {
                gate.Release();
            }
        }));
        return sockets;
    }

    private static async Task ForEachAsync(Socket[] sockets, Func<Socket, int, Task> work)
    {
        using var gate = new SemaphoreSlim(512);
        await Task.WhenAll(sockets.Select(async (socket, i) =>
        {
            await gate.WaitAsync();
            try
            {
                await work(socket, i);
            }
            finally
            {
                gate.Release();
            }
        }));
    }

    private static void CloseAll(Socket[] sockets)
    {
        foreach (var socket in sockets)
        {
            socket?.Dispose();
        }
    }
}
