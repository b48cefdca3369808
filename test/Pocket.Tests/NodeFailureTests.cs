using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>A storage node that stops: its objects fail with a clear error, everything else keeps working.</summary>
public sealed class NodeFailureTests
{
    private static Task WaitForStateAsync(PocketAdminClient admin, uint nodeId, NodeState state) =>
        WaitUntilAsync(async () => (await admin.GetNodesAsync()).Single(n => n.Id == nodeId).State == state, $"node {nodeId} is {state}");

    [Fact]
    public async Task ReadsOfAStoppedNodesObjectsFailWithNodeLostNamingTheKey()
    {
        await using var cluster = await StartClusterAsync(nodes: 3);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("failing", cts.Token);
        var victim = cluster.Nodes[1]!.NodeId;
        var others = cluster.Nodes.Select(n => n!.NodeId).Where(id => id != victim).ToList();
        var data = new Dictionary<string, byte[]>();
        async Task PutSomeAsync(string prefix, IReadOnlyDictionary<uint, double> weights)
        {
            await cluster.Admin(client).SetWeightsAsync(job.Id, weights, cts.Token);
            for (var i = 0; i < 6; i++)
            {
                var key = $"{prefix}/{i}";
                data[key] = DataFor(key, i % 3 == 0 ? 1_000 + i : (i << 19) + 70_000);
                await job.PutAsync(key, data[key], cancellationToken: cts.Token);
            }
        }

        // Placement is steered so the test knows which objects the stop will take.
        await PutSomeAsync("on-victim", new Dictionary<uint, double> { [victim] = 1 });
        await PutSomeAsync("elsewhere", others.ToDictionary(id => id, _ => 1.0));
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double>(), cts.Token);

        // Warm the client's connections to every node, so the stop also breaks live connections.
        foreach (var (key, bytes) in data)
        {
            Assert.Equal(Hash(bytes), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        var layouts = new Dictionary<string, ObjectInfo>();
        foreach (var key in data.Keys)
        {
            layouts[key] = (await job.LookupAsync(key, cts.Token))!;
        }

        var lost = layouts.Where(l => l.Value.Blocks.Any(b => b.NodeId == victim)).Select(l => l.Key).ToList();
        var safe = data.Keys.Except(lost).ToList();
        Assert.Equal(data.Keys.Where(k => k.StartsWith("on-victim/", StringComparison.Ordinal) && !layouts[k].Inline).Order(), lost.Order());
        Assert.Contains(safe, k => layouts[k].Inline);

        await cluster.StopNodeAsync(1);

        // Before and after the metadata server has noticed, the error is the same kind and names the object.
        foreach (var key in lost)
        {
            var error = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token));
            Assert.Contains(key, error.Message, StringComparison.Ordinal);
        }

        await WaitForStateAsync(cluster.Admin(client), victim, NodeState.Dead);
        foreach (var key in lost)
        {
            var whole = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token));
            Assert.Contains(key, whole.Message, StringComparison.Ordinal);
            var streamed = await Assert.ThrowsAsync<NodeLostException>(() => job.GetAsync(key, new HashingStream(), cancellationToken: cts.Token).WaitAsync(cts.Token));
            Assert.Contains(key, streamed.Message, StringComparison.Ordinal);
            Assert.Contains((await job.LookupAsync(key, cts.Token))!.Blocks, b => b.NodeId == victim && b.NodeState == NodeState.Dead);
        }

        foreach (var key in safe)
        {
            Assert.Equal(Hash(data[key]), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        // New data goes to the nodes that are left, in this job and in a fresh one.
        var fresh = await cluster.Admin(client).RegisterJobAsync("after-failure", cts.Token);
        foreach (var target in new[] { job, fresh })
        {
            var big = DataFor($"{target.Id}/big", 20 << 20);
            await target.PutAsync("after/big", big, cancellationToken: cts.Token);
            var info = await target.LookupAsync("after/big", cts.Token);
            Assert.DoesNotContain(info!.Blocks, b => b.NodeId == victim);
            Assert.Equal(Hash(big), Hash(await target.GetAsync("after/big", cancellationToken: cts.Token)));
        }

        // Lost objects can still be deleted; the dead node is not counted as used.
        foreach (var key in lost)
        {
            Assert.Equal(1, await job.DeleteAsync(key, cancellationToken: cts.Token));
        }

        Assert.Equal(safe.Count + 1, await job.CountAsync(cancellationToken: cts.Token));
        var nodes = await cluster.Admin(client).GetNodesAsync(cts.Token);
        Assert.Equal(0, nodes.Single(n => n.Id == victim).Used);
        await cluster.Admin(client).DeregisterJobAsync(job.Id, cts.Token);
        await cluster.Admin(client).DeregisterJobAsync(fresh.Id, cts.Token);
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task OtherJobsAreUnaffectedByALostNode()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var victim = cluster.Nodes[0]!.NodeId;
        var survivor = cluster.Nodes[1]!.NodeId;

        var unlucky = await cluster.Admin(client).RegisterJobAsync("unlucky", cts.Token);
        await cluster.Admin(client).SetWeightsAsync(unlucky.Id, new Dictionary<uint, double> { [victim] = 1 }, cts.Token);
        var lucky = await cluster.Admin(client).RegisterJobAsync("lucky", cts.Token);
        await cluster.Admin(client).SetWeightsAsync(lucky.Id, new Dictionary<uint, double> { [survivor] = 1 }, cts.Token);
        var payload = RandomBytes(3 << 20, 3);
        await unlucky.PutAsync("x", payload, cancellationToken: cts.Token);
        await lucky.PutAsync("x", payload, cancellationToken: cts.Token);
        await lucky.PutAsync("tiny", new byte[] { 1, 2, 3 }, cancellationToken: cts.Token);

        await cluster.StopNodeAsync(0);
        await WaitForStateAsync(cluster.Admin(client), victim, NodeState.Dead);

        var error = await Assert.ThrowsAsync<NodeLostException>(async () => await unlucky.GetAsync("x", cancellationToken: cts.Token));
        Assert.Contains("'x'", error.Message, StringComparison.Ordinal);
        Assert.Equal(Hash(payload), Hash(await lucky.GetAsync("x", cancellationToken: cts.Token)));
        Assert.Equal(new byte[] { 1, 2, 3 }, await lucky.GetAsync("tiny", cancellationToken: cts.Token));

        // The unlucky job's weights name only a dead node; its new data still finds a live one.
        await unlucky.PutAsync("y", payload, cancellationToken: cts.Token);
        Assert.Equal(Hash(payload), Hash(await unlucky.GetAsync("y", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task WritesToAStoppedNodeFailAndLeaveNothingBehind()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("half-written", cts.Token);
        var victim = cluster.Nodes[0]!.NodeId;
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [victim] = 1 }, cts.Token);

        // The write is granted while the node lives, and the node dies before the data arrives.
        var stream = new GatedStream(new PatternStream(6 << 20, 6), 1 << 20);
        var put = job.PutAsync("doomed", stream, cancellationToken: cts.Token);
        await stream.Reached.WaitAsync(cts.Token);
        await cluster.StopNodeAsync(0);
        await WaitForStateAsync(cluster.Admin(client), victim, NodeState.Dead);
        stream.Release();

        await Assert.ThrowsAnyAsync<PocketException>(() => put.WaitAsync(cts.Token));
        Assert.Null(await job.LookupAsync("doomed", cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, (await job.GetUsageAsync(cts.Token)).BlockBytes);

        // The key is free again, and the surviving node takes the retry.
        var data = RandomBytes(2 << 20, 2);
        await job.PutAsync("doomed", data, cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("doomed", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task StoppingANodeInTheMiddleOfTransfersIsSafe()
    {
        // Reads and writes are in flight on the node's connections while it stops and frees its memory.
        for (var round = 0; round < 3; round++)
        {
            await using var cluster = await StartClusterAsync(nodes: 2);
            await using var client = await cluster.ConnectAsync();
            using var cts = Timeout();
            var job = await cluster.Admin(client).RegisterJobAsync("busy", cts.Token);
            var data = RandomBytes(4 << 20, round);
            await job.PutAsync("shared", data, cancellationToken: cts.Token);

            using var stop = new CancellationTokenSource();
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
            {
                var failures = 0;
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        if (w % 2 == 0)
                        {
                            var back = await job.GetAsync("shared", cancellationToken: cts.Token).AsTask().WaitAsync(Patience);
                            Assert.Equal(data.Length, back.Length);
                        }
                        else
                        {
                            await job.PutAsync($"w{w}/{i}", data.AsMemory(0, 2 << 20), cancellationToken: cts.Token).AsTask().WaitAsync(Patience);
                        }

                        started.TrySetResult();
                    }
                    catch (PocketException)
                    {
                        // Expected once the node is gone; what matters is that nothing worse happens.
                        if (++failures > 1000)
                        {
                            return;
                        }
                    }
                }
            })).ToList();

            await started.Task.WaitAsync(cts.Token);
            await cluster.StopNodeAsync(round % 2);
            await stop.CancelAsync();
            await Task.WhenAll(workers).WaitAsync(cts.Token);

            // The survivor still serves (room made first: the writers may have filled it).
            await WaitForStateAsync(cluster.Admin(client), cluster.Nodes[1 - (round % 2)]!.NodeId, NodeState.Live);
            await cluster.Admin(client).DeregisterJobAsync(job.Id, cts.Token);
            Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
            var fresh = await cluster.Admin(client).RegisterJobAsync("after", cts.Token);
            await fresh.PutAsync("x", data, cancellationToken: cts.Token);
            Assert.Equal(Hash(data), Hash(await fresh.GetAsync("x", cancellationToken: cts.Token)));
        }
    }

    [Fact]
    public async Task ANodeDeclaredDeadRejoinsAsANewEmptyNode()
    {
        var time = new FakeTimeProvider();
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions
        {
            StorageNodes = 1,
            NodeCapacity = 16 << 20,
            PreTouchMemory = false,
            TimeProvider = time,
            NodeTimeout = TimeSpan.FromSeconds(5),
            HeartbeatInterval = TimeSpan.FromSeconds(10),
        });
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("rejoin", cts.Token);
        await job.PutAsync("before", RandomBytes(2 << 20, 2), cancellationToken: cts.Token);
        var oldId = cluster.Nodes[0]!.NodeId;

        // Silent past the timeout: dead. Its next heartbeat is refused, and it registers again, empty.
        time.Advance(TimeSpan.FromSeconds(6));
        await WaitForStateAsync(cluster.Admin(client), oldId, NodeState.Dead);
        time.Advance(TimeSpan.FromSeconds(4));
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).Any(n => n.Id != oldId && n.State == NodeState.Live), "the node registers again");
        var nodes = await cluster.Admin(client).GetNodesAsync(cts.Token);
        var fresh = nodes.Single(n => n.State == NodeState.Live);
        await WaitUntilAsync(() => Task.FromResult(cluster.Nodes[0]!.NodeId == fresh.Id), "the node has read its new id");
        Assert.Equal(0, fresh.Used);
        Assert.Equal(16 << 20, fresh.Capacity);

        // Old data is reported lost; new data lands on the rejoined node and reads back.
        var lost = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync("before", cancellationToken: cts.Token));
        Assert.Contains("'before'", lost.Message, StringComparison.Ordinal);
        var data = RandomBytes(3 << 20, 3);
        await job.PutAsync("after", data, cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
        Assert.All((await job.LookupAsync("after", cts.Token))!.Blocks, b => Assert.Equal(fresh.Id, b.NodeId));
    }

    [Fact]
    public async Task NodesWithoutHeartbeatsAreDeclaredDeadAfterTheTimeout()
    {
        var time = new FakeTimeProvider();
        var token = JobToken.NewRandom();

        // Real nodes never heartbeat in this test (their interval is an hour of fake time).
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions
        {
            StorageNodes = 2,
            NodeCapacity = 16 << 20,
            PreTouchMemory = false,
            TimeProvider = time,
            NodeTimeout = TimeSpan.FromSeconds(5),
            HeartbeatInterval = TimeSpan.FromHours(1),
            ClusterToken = token,
        });
        var died = new List<uint>();
        var allDied = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        cluster.Metadata.NodeDied += (id, _) =>
        {
            lock (died)
            {
                died.Add(id);
                if (died.Count == 3)
                {
                    allDied.TrySetResult();
                }
            }
        };

        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("liveness", cts.Token);
        await job.PutAsync("big", RandomBytes(4 << 20, 4), cancellationToken: cts.Token);
        await job.PutAsync("small", new byte[] { 42 }, cancellationToken: cts.Token);

        // A third node that this test drives by hand: it heartbeats on its own registration connection.
        await using var manual = await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions(), cts.Token);
        var register = await manual.SendAsync(Opcode.RegisterNode, FrameFlags.None, token,
            new BodyWriter().U8((byte)NodeTier.Dram).Str("127.0.0.1").U16(9).I64(1 << 20).I32(64 << 10).Bytes(new byte[32]).ToArray(), cancellationToken: cts.Token);
        Assert.Equal(Status.Ok, register.Status);
        var manualId = new BodyReader(register.Body).U32();

        async Task<Status> HeartbeatAsync()
        {
            var body = new BodyWriter().U32(manualId).F64(0.1).F64(0).F64(0).I64(0).ToArray();
            return (await manual.SendAsync(Opcode.Heartbeat, FrameFlags.None, token, body, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token)).Status;
        }

        // Just short of the timeout nothing is dead: the silent nodes are suspect (past 3 s), and a read of their
        // blocks is refused at once as unavailable, not lost.
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(Status.Ok, await HeartbeatAsync());
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).Count(n => n.State == NodeState.Suspect) == 2, "the silent nodes are suspect");
        Assert.Equal(NodeState.Live, (await cluster.Admin(client).GetNodesAsync(cts.Token)).Single(n => n.Id == manualId).State);
        var unavailable = await Assert.ThrowsAsync<NodeUnavailableException>(async () => await job.GetAsync("big", cancellationToken: cts.Token));
        Assert.Contains("retry shortly", unavailable.Message, StringComparison.Ordinal);
        lock (died)
        {
            Assert.Empty(died);
        }

        // Past it, the silent nodes die; the one that kept heartbeating lives on.
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(Status.Ok, await HeartbeatAsync());
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).Count(n => n.State == NodeState.Dead) == 2, "the silent nodes are dead");
        var nodes = await cluster.Admin(client).GetNodesAsync(cts.Token);
        Assert.Equal(NodeState.Live, nodes.Single(n => n.Id == manualId).State);
        Assert.All(nodes.Where(n => n.Id != manualId), n => Assert.Equal(0, n.Used));
        lock (died)
        {
            Assert.Equal(cluster.Nodes.Select(n => n!.NodeId).Order(), died.Order());
        }

        var error = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync("big", cancellationToken: cts.Token));
        Assert.Contains("'big'", error.Message, StringComparison.Ordinal);
        Assert.Equal(new byte[] { 42 }, await job.GetAsync("small", cancellationToken: cts.Token));

        // Once it stops heartbeating it goes the same way, and a late heartbeat is refused.
        time.Advance(TimeSpan.FromSeconds(6));
        await allDied.Task.WaitAsync(cts.Token);
        Assert.Equal(Status.NotFound, await HeartbeatAsync());
        Assert.All(await cluster.Admin(client).GetNodesAsync(cts.Token), n => Assert.Equal(NodeState.Dead, n.State));
        var none = await Assert.ThrowsAsync<CapacityExceededException>(async () => await job.PutAsync("more", new byte[1 << 20], cancellationToken: cts.Token));
        Assert.Equal(Status.NoNodes, none.Status);
    }
}
