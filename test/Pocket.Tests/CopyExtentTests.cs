using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Pocket.Storage;
using Pocket.StorageServer;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// CopyExtent: a drain moves bytes node to node (the target pulls them from the source with a read grant), the
/// metadata server never holds them, and a node that predates CopyExtent still drains through the old path.
/// </summary>
public sealed class CopyExtentTests
{
    /// <summary>An expiry no test outlives (grants here are signed by the test itself).</summary>
    private const long FarFuture = 4_000_000_000_000;

    private const long Capacity = 96L << 20;

    private static int SizeFor(int i) => (i % 4) switch
    {
        0 => 40_000,
        1 => 300_000 + i,
        2 => 1_100_000 + i,
        _ => 2_600_000 + (i * 7),
    };

    private static async Task<NodeInfo> NodeAsync(PocketAdminClient admin, uint id) =>
        (await admin.GetNodesAsync()).Single(n => n.Id == id);

    /// <summary>A storage node of the cluster started with options the cluster API does not offer.</summary>
    private static async Task<StorageServer.StorageServer> StartNodeAsync(PocketCluster cluster, Func<StorageServerOptions, StorageServerOptions> configure)
    {
        var node = new StorageServer.StorageServer(
            configure(new StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", cluster.Metadata.EndPoint.Port),
                ClusterToken = cluster.Options.ClusterToken,
                Capacity = Capacity,
                DeviceFactory = o => new NativeMemoryDevice(o.Capacity, false),
            }),
            NullLoggerFactory.Instance);
        await node.StartAsync();
        return node;
    }

    private static async Task<Dictionary<string, string>> PutAllAsync(PocketJob job, string prefix, int count, CancellationToken token)
    {
        var data = new Dictionary<string, string>();
        for (var i = 0; i < count; i++)
        {
            var key = $"{prefix}/{i}";
            var bytes = DataFor(key, SizeFor(i));
            data[key] = Hash(bytes);
            await job.PutAsync(key, bytes, cancellationToken: token);
        }

        return data;
    }

    [Fact]
    public async Task ADrainUnderLoadMovesEveryByteNodeToNodeAndTheMetadataServerReceivesNone()
    {
        // Every object starts on the victim, the only node; then two targets join: one takes copies in 64 KiB chunks
        // straight into node memory, the other through its connection buffer (a device that is not addressable).
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("copied", cts.Token);
        var victim = cluster.Nodes[0]!.NodeId;
        var data = await PutAllAsync(job, "obj", 32, cts.Token);
        await using var chunked = await StartNodeAsync(cluster, o => o with { CopyChunkSize = 64 << 10 });
        await using var buffered = await StartNodeAsync(cluster, o => o with { DeviceFactory = d => new SimulatedDevice(new NativeMemoryDevice(d.Capacity, false), "buffered", TimeSpan.Zero, 1e12) });

        // Load through the whole drain: readers check every object, a writer keeps adding new ones.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var written = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
        async Task ReadLoopAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                foreach (var (key, hash) in data)
                {
                    try
                    {
                        if (Hash(await job.GetAsync(key, cancellationToken: stop.Token)) != hash)
                        {
                            failures.Enqueue($"{key}: bad checksum");
                        }
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (PocketException ex)
                    {
                        failures.Enqueue($"{key}: {ex.Message}");
                    }
                }
            }
        }

        async Task WriteLoopAsync()
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var key = $"during/{i}";
                var bytes = DataFor(key, SizeFor(i));
                try
                {
                    await job.PutAsync(key, bytes, cancellationToken: stop.Token);
                    written[key] = Hash(bytes);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
                catch (PocketException ex)
                {
                    failures.Enqueue($"{key}: {ex.Message}");
                }
            }
        }

        var load = new[] { Task.Run(ReadLoopAsync), Task.Run(ReadLoopAsync), Task.Run(WriteLoopAsync) };
        var receivedBefore = cluster.Metadata.Drains.BytesReceived;
        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim)).State == NodeState.Drained, "the victim is drained");
        await stop.CancelAsync();
        await Task.WhenAll(load);
        Assert.Empty(failures);

        var drained = await NodeAsync(cluster.Admin(client), victim);
        Assert.Equal(0, drained.Used);
        Assert.True(drained.MovedBytes >= data.Values.Count * 40_000L, $"moved {drained.MovedBytes} bytes");
        Assert.True(chunked.BytesCopied > 0 && buffered.BytesCopied > 0, $"both targets copied ({chunked.BytesCopied}, {buffered.BytesCopied})");
        Assert.True(chunked.BytesCopied + buffered.BytesCopied >= drained.MovedBytes, "every moved byte was copied by a target");

        // What the drain's connections received is the copies' empty replies: a frame header each, no data.
        var received = cluster.Metadata.Drains.BytesReceived - receivedBefore;
        Assert.True(received < 64 << 10, $"the metadata server received {received} bytes while {drained.MovedBytes} moved");

        // The victim goes away; every object, old and new, reads back from the targets.
        await cluster.StopNodeAsync(0);
        foreach (var (key, hash) in data.Concat(written))
        {
            var info = (await job.LookupAsync(key, cts.Token))!;
            Assert.DoesNotContain(info.Blocks, b => b.NodeId == victim);
            Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }
    }

    [Fact]
    public async Task ATargetThatDoesNotKnowCopyExtentIsDrainedToThroughTheMetadataServer()
    {
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("old-target", cts.Token);
        var victim = cluster.Nodes[0]!.NodeId;
        var data = await PutAllAsync(job, "obj", 12, cts.Token);
        await using var old = await StartNodeAsync(cluster, o => o with { CopyExtentDisabled = true });

        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim)).State == NodeState.Drained, "the victim is drained");
        var drained = await NodeAsync(cluster.Admin(client), victim);
        Assert.Equal(0, old.BytesCopied);
        Assert.True(cluster.Metadata.Drains.BytesReceived >= drained.MovedBytes, "the old path reads every byte into the metadata server");

        await cluster.StopNodeAsync(0);
        foreach (var (key, hash) in data)
        {
            Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }
    }

    /// <summary>Raw CopyExtent requests against two nodes; the source's data is written with a grant signed here.</summary>
    [Fact]
    public async Task CopyExtentChecksBothGrantsAndNamesWhatFailed()
    {
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: Capacity);
        using var cts = Timeout();
        var source = cluster.Nodes[0]!;
        var target = cluster.Nodes[1]!;
        const int Length = 1 << 20;
        const long SourceAt = Capacity - Length;
        var bytes = RandomBytes(Length, 12);
        await using var toSource = await FrameConnection.ConnectAsync("127.0.0.1", source.EndPoint.Port, new(), cts.Token);
        await using var toTarget = await FrameConnection.ConnectAsync("127.0.0.1", target.EndPoint.Port, new(), cts.Token);
        var head = new BodyWriter();
        WriteExtentRequest.Write(head, ExtentGrant.Sign(source.GrantSecret, source.NodeId, 5, SourceAt, Length, GrantRights.Write, FarFuture), 0);
        Assert.Equal(Status.Ok, (await toSource.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, bytes, cancellationToken: cts.Token)).Status);
        var read = ExtentGrant.Sign(source.GrantSecret, source.NodeId, 5, SourceAt, Length, GrantRights.Read, FarFuture);
        ExtentGrant WriteGrant(long at, uint generation) => ExtentGrant.Sign(target.GrantSecret, target.NodeId, generation, at, Length, GrantRights.Write, FarFuture);

        async Task<FrameReply> CopyAsync(ExtentGrant write, ExtentGrant from, int port = 0, int within = 0)
        {
            var body = new BodyWriter();
            CopyExtentRequest.Write(body, write, from, within, "127.0.0.1", (ushort)(port == 0 ? source.EndPoint.Port : port));
            return await toTarget.SendAsync(Opcode.CopyExtent, FrameFlags.None, cluster.Options.ClusterToken, body.WrittenMemory, cancellationToken: cts.Token);
        }

        bool Untouched(long at) => target.Store.Device.GetSpan(at, Length).IndexOfAnyExcept((byte)0) < 0;
        var sourceSent = source.BytesSent;

        // A valid write grant (as any client holds for its own space) without the cluster token: refused unread, so a
        // client cannot make a node connect to an address of its choosing.
        var client = new BodyWriter(CopyExtentRequest.MaxSize);
        CopyExtentRequest.Write(client, WriteGrant(0, 10), read, 0, "127.0.0.1", (ushort)source.EndPoint.Port);
        var untokened = await toTarget.SendAsync(Opcode.CopyExtent, FrameFlags.None, JobToken.NewRandom(), client.WrittenMemory, cancellationToken: cts.Token);
        Assert.Equal(Status.Unauthorized, untokened.Status);
        Assert.Contains("cluster token", untokened.Message, StringComparison.Ordinal);
        Assert.True(Untouched(0));
        Assert.Equal(sourceSent, source.BytesSent);

        // A forged write grant, and a real one of another node, are refused before anything is read from the source.
        var forged = ExtentGrant.Sign(RandomNumberGenerator.GetBytes(32), target.NodeId, 6, 0, Length, GrantRights.Write, FarFuture);
        var reply = await CopyAsync(forged, read);
        Assert.Equal(Status.Unauthorized, reply.Status);
        var otherNodes = ExtentGrant.Sign(source.GrantSecret, source.NodeId, 6, 0, Length, GrantRights.Write, FarFuture);
        Assert.Equal(Status.Unauthorized, (await CopyAsync(otherNodes, read)).Status);
        Assert.Equal(Status.Unauthorized, (await CopyAsync(ExtentGrant.Sign(target.GrantSecret, target.NodeId, 6, 0, Length, GrantRights.Read, FarFuture), read)).Status);
        Assert.Equal(sourceSent, source.BytesSent);
        Assert.False(target.Store.Holds(0, Length, 6), "a refused copy claimed the target's blocks");
        Assert.True(Untouched(0));

        // A forged read grant is refused by the source; the target's space gets no byte.
        var forgedRead = ExtentGrant.Sign(RandomNumberGenerator.GetBytes(32), source.NodeId, 5, SourceAt, Length, GrantRights.Read, FarFuture);
        reply = await CopyAsync(WriteGrant(0, 7), forgedRead);
        Assert.Equal(Status.Unauthorized, reply.Status);
        Assert.Contains($"source node {source.NodeId}", reply.Message, StringComparison.Ordinal);
        Assert.True(Untouched(0));

        // A read grant of an older allocation is stale, and says so.
        reply = await CopyAsync(WriteGrant(0, 8), ExtentGrant.Sign(source.GrantSecret, source.NodeId, 4, SourceAt, Length, GrantRights.Read, FarFuture));
        Assert.Equal(Status.StaleGrant, reply.Status);
        Assert.True(Untouched(0));
        Assert.Equal(0, target.BytesCopied);

        // A source nobody listens on is a lost node.
        int deadPort;
        using (var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            deadPort = ((IPEndPoint)listener.LocalEndPoint!).Port;
        }

        reply = await CopyAsync(WriteGrant(0, 9), read, port: deadPort);
        Assert.Equal(Status.NodeLost, reply.Status);
        Assert.Contains("unreachable", reply.Message, StringComparison.Ordinal);

        // Bad bodies: a range outside the source, a copy from the node itself, garbage after the write grant.
        Assert.Equal(Status.BadRequest, (await CopyAsync(WriteGrant(0, 10), read, within: 1)).Status);
        Assert.Equal(Status.BadRequest, (await CopyAsync(WriteGrant(0, 10), ExtentGrant.Sign(target.GrantSecret, target.NodeId, 5, SourceAt, Length, GrantRights.Read, FarFuture), port: target.EndPoint.Port)).Status);
        var garbage = new BodyWriter();
        GrantList.WriteGrant(garbage, WriteGrant(0, 10));
        garbage.Bytes([1, 2, 3]);
        Assert.Equal(Status.BadRequest, (await toTarget.SendAsync(Opcode.CopyExtent, FrameFlags.None, cluster.Options.ClusterToken, garbage.WrittenMemory, cancellationToken: cts.Token)).Status);
        Assert.True(Untouched(0));

        // And the node still copies: the bytes land in place and read back with the target's grant.
        reply = await CopyAsync(WriteGrant(0, 11), read);
        Assert.Equal(Status.Ok, reply.Status);
        Assert.Equal(Length, target.BytesCopied);
        var back = new byte[Length];
        var readHead = new BodyWriter();
        ReadExtentRequest.Write(readHead, ExtentGrant.Sign(target.GrantSecret, target.NodeId, 11, 0, Length, GrantRights.Read, FarFuture), 0, Length);
        Assert.Equal(Status.Ok, (await toTarget.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, readHead.WrittenMemory, replyInto: back, cancellationToken: cts.Token)).Status);
        Assert.Equal(Hash(bytes), Hash(back));
        Assert.Equal(1, target.PeerConnectionCount);
    }

    [Fact]
    public async Task ACopyWhoseSourceDiesFailsAsNodeLostAndTheDrainGoesOn()
    {
        // A slow source keeps its drain busy; killing it part-way makes copies fail with NodeLost, the objects not
        // moved yet report NodeLost, the moved ones read, and placement goes on (as before CopyExtent).
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity);
        var slow = await cluster.AddNodeAsync(deviceFactory: o => new SimulatedDevice(new NativeMemoryDevice(o.Capacity, false), "slow", TimeSpan.Zero, 8e6));
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("dying-source", cts.Token);
        var victim = cluster.Nodes[slow]!.NodeId;
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [victim] = 1 }, cts.Token);
        var data = new Dictionary<string, string>();
        for (var i = 0; i < 16; i++)
        {
            var key = $"k/{i}";
            var bytes = DataFor(key, 1_000_000 + i);
            data[key] = Hash(bytes);
            await job.PutAsync(key, bytes, cancellationToken: cts.Token);
        }

        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double>(), cts.Token);
        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim)).MovedBytes > 0, "the drain has moved something");
        await cluster.StopNodeAsync(slow);
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).SingleOrDefault(n => n.Id == victim)?.State is NodeState.Dead or null, "the killed node is noticed");

        var moved = 0;
        foreach (var (key, hash) in data)
        {
            if ((await job.LookupAsync(key, cts.Token))!.Blocks.Any(b => b.NodeId == victim))
            {
                await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token));
            }
            else
            {
                moved++;
                Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
            }
        }

        Assert.True(moved > 0, "objects moved before the kill stay readable");
        Assert.True(cluster.Nodes[0]!.BytesCopied >= moved * 1_000_000L, "moved objects were copied node to node");
        var after = DataFor("after", 2_000_000);
        await job.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task ADrainWhoseCopiesAllFailWaitsForTheClockBeforeItsNextPass()
    {
        // The only target cannot reach its source (it insists on TLS; the source speaks plain TCP), so every copy
        // fails. On a clock that stands still the drain makes one pass and then waits for the clock: it does not
        // retry in a tight loop (before, thousands of failed copies and warnings a second).
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity, o => o with { TimeProvider = clock });
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("unreachable-source", cts.Token);
        for (var i = 0; i < 4; i++)
        {
            await job.PutAsync($"k/{i}", DataFor($"k/{i}", 300_000), cancellationToken: cts.Token);
        }

        var victim = cluster.Nodes[0]!.NodeId;
        await using var target = await StartNodeAsync(cluster, o => o with { PeerConnection = new FrameConnectionOptions { TlsHost = "localhost" } });
        var drains = cluster.Metadata.Drains;
        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);

        // One pass: one failure per object.
        await WaitUntilAsync(() => Task.FromResult(drains.MovesFailed >= 4), "the first pass failed");
        var afterFirst = drains.MovesFailed;
        Assert.Equal(4, afterFirst);

        // With the clock standing still nothing more is tried, however long the machine takes.
        await Task.Delay(TimeSpan.FromSeconds(1), cts.Token);
        Assert.Equal(afterFirst, drains.MovesFailed);

        // Once the clock moves past the wait, the next pass runs (the clock is moved in small steps until it does, as
        // the drain may not have started its wait yet when the test first moves it).
        await WaitUntilAsync(
            () =>
            {
                clock.Advance(TimeSpan.FromMilliseconds(50));
                return Task.FromResult(drains.MovesFailed >= 8);
            },
            "the second pass failed");
        Assert.Equal(NodeState.Draining, (await NodeAsync(cluster.Admin(client), victim)).State);
    }

    [Fact]
    public void TheWaitAfterFailedPassesDoublesUpToItsBound()
    {
        var waits = new List<TimeSpan> { TimeSpan.FromMilliseconds(50) };
        while (waits.Count < 12)
        {
            waits.Add(Pocket.Metadata.Drain.DrainCoordinator.NextBackoff(waits[^1]));
        }

        Assert.Equal([50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000, 10_000], waits.Select(w => w.TotalMilliseconds));
    }

    [Fact]
    public async Task ANodeKeepsAtMostItsBoundOfPeerConnectionsAndStillCopies()
    {
        // One peer connection at most: copying alternately from two sources replaces it each time, and every copy lands.
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: Capacity);
        await using var target = await StartNodeAsync(cluster, o => o with { MaxPeerConnections = 1 });
        using var cts = Timeout();
        const int Length = 256 << 10;
        await using var toTarget = await FrameConnection.ConnectAsync("127.0.0.1", target.EndPoint.Port, new(), cts.Token);
        for (var round = 0; round < 4; round++)
        {
            var source = cluster.Nodes[round % 2]!;
            var bytes = RandomBytes(Length, round);
            var at = Capacity - ((round + 1) * (long)Length);
            await using (var toSource = await FrameConnection.ConnectAsync("127.0.0.1", source.EndPoint.Port, new(), cts.Token))
            {
                var head = new BodyWriter();
                WriteExtentRequest.Write(head, ExtentGrant.Sign(source.GrantSecret, source.NodeId, 3, at, Length, GrantRights.Write, FarFuture), 0);
                Assert.Equal(Status.Ok, (await toSource.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, bytes, cancellationToken: cts.Token)).Status);
            }

            var body = new BodyWriter();
            CopyExtentRequest.Write(
                body,
                ExtentGrant.Sign(target.GrantSecret, target.NodeId, (uint)(round + 1), 0, Length, GrantRights.Write, FarFuture),
                ExtentGrant.Sign(source.GrantSecret, source.NodeId, 3, at, Length, GrantRights.Read, FarFuture),
                0,
                "127.0.0.1",
                (ushort)source.EndPoint.Port);
            var reply = await toTarget.SendAsync(Opcode.CopyExtent, FrameFlags.None, cluster.Options.ClusterToken, body.WrittenMemory, cancellationToken: cts.Token);
            Assert.True(reply.IsOk, reply.Message);
            Assert.Equal(1, target.PeerConnectionCount);
            Assert.Equal(Hash(bytes), Hash(target.Store.Device.GetSpan(0, Length)));
        }

        Assert.Equal(4L * Length, target.BytesCopied);
    }
}
