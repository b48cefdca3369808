using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Protocol;
using Pocket.Storage;
using static Pocket.Controller.Tests.TestObjects;

namespace Pocket.Controller.Tests;

/// <summary>
/// The live cluster changing size: removed nodes leave every job, a failed start batch leaves nothing running, the
/// warm pool, per-job GB-seconds and a node killed during the autoscaler's drain. Real in-process clusters.
/// </summary>
public sealed class ElasticTests
{
    private const long NodeCapacity = 32L << 20;

    // The autoscaler only acts when told to: nothing is above 100 %, and shrinking needs a quiet day.
    private static readonly AutoscalerOptions ByHand = new() { Lower = 0.5, Upper = 1.0, MinNodes = 1, Cooldown = TimeSpan.FromDays(1), NewNodeCapacityBytes = NodeCapacity, Resources = ScalingResources.Capacity };

    private static Task<PocketCluster> ClusterAsync(int nodes, long capacity = NodeCapacity) =>
        PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = nodes, NodeCapacity = capacity, PreTouchMemory = false, NodeTimeout = TimeSpan.FromMinutes(5) });

    private static ControllerServer Controller(PocketCluster cluster, IStorageProvisioner? provisioner, TimeProvider? time = null, AutoscalerOptions? autoscaler = null, WarmPoolOptions? pool = null, int minimumNodes = 2, TimeSpan? telemetry = null) => new(
        new ControllerOptions
        {
            MetadataAddress = cluster.MetadataAddress,
            ClusterToken = cluster.Options.ClusterToken,
            Registry = new JobRegistryOptions
            {
                Sizing = new SizingOptions { MinimumNodes = minimumNodes, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = cluster.Options.NodeCapacity }] },
                TimeProvider = time ?? TimeProvider.System,
            },
            Autoscaler = autoscaler,
            WarmPool = pool,
            TelemetryInterval = telemetry ?? TimeSpan.FromSeconds(1),
        },
        provisioner,
        NullLoggerFactory.Instance);

    private static ProvisionedNode Adopted(PocketCluster cluster, int index) =>
        new(NodeTier.Dram, index.ToString(System.Globalization.CultureInfo.InvariantCulture), cluster.Nodes[index]!.NodeId, null);

    [Fact]
    public async Task ARemovedNodeLeavesEveryJobsWeightsSharesAndAllocations()
    {
        await using var cluster = await ClusterAsync(nodes: 4, capacity: 256L << 20);
        await using var controller = Controller(cluster, new InProcessProvisioner(cluster), autoscaler: ByHand with { NewNodeCapacityBytes = 256L << 20 }, minimumNodes: 4);
        await controller.StartAsync();
        using var api = new PocketControllerClient(controller.Url, cluster.Options.ClusterToken);
        var job = await controller.Registry.RegisterAsync("spread", new JobHints { CapacityBytes = 64L << 20 });
        Assert.Equal(4, job.Weights.Weights.Count);

        // Drained and stopped by the autoscaler.
        var drained = cluster.Nodes[0]!.NodeId;
        controller.Autoscaler!.Adopt(Adopted(cluster, 0));
        await controller.Autoscaler.RemoveNodeAsync(drained, "test");
        AssertGone(drained);

        // Killed: the telemetry notices and the registry drops it.
        var killed = cluster.Nodes[1]!.NodeId;
        await cluster.StopNodeAsync(1);
        await WaitUntilAsync(() => Task.FromResult(!controller.Registry.Find(job.Id)!.Weights.Weights.ContainsKey(killed)), $"job {job.Id} drops the dead node {killed}");
        AssertGone(killed);

        var listed = (await api.GetJobAsync(job.Id))!;
        Assert.Equal([cluster.Nodes[2]!.NodeId, cluster.Nodes[3]!.NodeId], listed.Nodes.Select(n => n.Id).Order());
        Assert.Equal(1.0, listed.Nodes.Sum(n => n.Weight), 9);

        void AssertGone(uint node)
        {
            var record = controller.Registry.Find(job.Id)!;
            Assert.DoesNotContain(node, record.Weights.Weights.Keys);
            Assert.DoesNotContain(record.Shares, s => s.NodeId == node);
            Assert.False(controller.Registry.Allocations.ContainsKey(node));
        }
    }

    [Fact]
    public async Task ConcurrentRemovalsOfOneNodeDrainAndStopItOnceAndTheLaterOneIsANoOp()
    {
        await using var cluster = await ClusterAsync(nodes: 3);
        var provisioner = new GatedProvisioner(new InProcessProvisioner(cluster));
        await using var controller = Controller(cluster, provisioner, autoscaler: ByHand);
        await controller.StartAsync();
        var node = cluster.Nodes[0]!.NodeId;
        controller.Autoscaler!.Adopt(Adopted(cluster, 0));

        // The first removal cannot finish (its stop waits for the gate), so both calls find the node adopted.
        var first = controller.Autoscaler.RemoveNodeAsync(node, "test: first");
        var second = controller.Autoscaler.RemoveNodeAsync(node, "test: second");
        await provisioner.Stopping.Task.WaitAsync(TimeSpan.FromSeconds(50));
        provisioner.Gate.SetResult();
        await Task.WhenAll(first, second);

        Assert.Equal(["0"], provisioner.Stopped.Select(n => n.Handle));
        Assert.Single(controller.Events.Last(1000), e => e.Kind == "node-stopped" && e.NodeId == node);
        Assert.Single(controller.Events.Last(1000), e => e.Kind == "scale-down" && e.NodeId == node);
        Assert.DoesNotContain(controller.Events.Last(1000), e => e.Kind == "scale-failed");
    }

    [Fact]
    public async Task AScaleUpSpreadsTheRunningJobsOfItsTierOverTheNewNode()
    {
        await using var cluster = await ClusterAsync(nodes: 2, capacity: 256L << 20);
        await using var controller = Controller(cluster, new InProcessProvisioner(cluster), autoscaler: ByHand with { NewNodeCapacityBytes = 256L << 20 });
        await controller.StartAsync();
        await using var client = await cluster.ConnectAsync();
        var registered = await controller.Registry.RegisterAsync("running", new JobHints { CapacityBytes = 64L << 20 });
        var before = registered.Weights.Weights.Keys.Order().ToList();
        Assert.Equal(2, before.Count);
        var job = client.OpenJob(registered.Id, registered.Token);
        await job.PutAsync("before", Data("before", 1 << 20));

        var added = await controller.Autoscaler!.ScaleUpAsync(NodeTier.Dram, "test");
        var node = added.NodeId!.Value;

        // The running job's map now holds three nodes at a third each, and the metadata server places by it.
        var weights = controller.Registry.Find(registered.Id)!.Weights.Weights;
        Assert.Equal([.. before, node], weights.Keys.Order());
        Assert.All(weights.Values, w => Assert.Equal(1.0 / 3, w, 9));
        Assert.Contains(controller.Events.Last(100), e => e.Kind == "node-started" && e.NodeId == node && e.Reason.Contains("1 running job", StringComparison.Ordinal));
        // 48 extents of 1 MiB, each placed at random by weight: none on the new node has odds (2/3)^48, under 1e-8
        // (8 extents, as before, missed it about once in 26 runs).
        var data = Data("after", 48 << 20);
        await job.PutAsync("after", data);
        Assert.Contains((await job.LookupAsync("after"))!.Blocks, b => b.NodeId == node);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("after")));
        Assert.Equal(Hash(Data("before", 1 << 20)), Hash(await job.GetAsync("before")));
    }

    [Fact]
    public async Task PruningOnAnOlderSampleKeepsNodesAddedSinceAndDropsOnlyDeadOrOlderMissingOnes()
    {
        await using var cluster = await ClusterAsync(nodes: 3, capacity: 256L << 20);
        // Telemetry ticks every hour on the real clock: only the test's own PruneAsync calls prune.
        await using var controller = Controller(cluster, provisioner: null, minimumNodes: 3, telemetry: TimeSpan.FromHours(1));
        await controller.StartAsync();
        var job = await controller.Registry.RegisterAsync("pruned", new JobHints { CapacityBytes = 64L << 20 });
        var ids = job.Weights.Weights.Keys.Order().ToList();
        Assert.Equal(3, ids.Count);
        NodeSample Sample(uint id, NodeState state) => new(DateTimeOffset.UtcNow, id, NodeTier.Dram, state, 1, 0, 0, 0, 0, 0);

        // A sample taken before the newest node registered (it is missing) and while it was standby: it stays.
        await controller.Registry.PruneAsync([Sample(ids[0], NodeState.Live), Sample(ids[1], NodeState.Live)], CancellationToken.None);
        await controller.Registry.PruneAsync([Sample(ids[0], NodeState.Live), Sample(ids[1], NodeState.Live), Sample(ids[2], NodeState.Standby)], CancellationToken.None);
        Assert.Equal(ids, controller.Registry.Find(job.Id)!.Weights.Weights.Keys.Order());

        // Missing while a newer node is listed: gone. Listed dead: gone.
        await controller.Registry.PruneAsync([Sample(ids[1], NodeState.Dead), Sample(ids[2], NodeState.Live)], CancellationToken.None);
        Assert.Equal([ids[2]], controller.Registry.Find(job.Id)!.Weights.Weights.Keys);
    }

    [Fact]
    public async Task AFailedStartInABatchStopsTheNodesThatDidStart()
    {
        await using var cluster = await ClusterAsync(nodes: 0, capacity: 64L << 20);
        var provisioner = new FailingProvisioner(new InProcessProvisioner(cluster), failCall: 2);
        await using var controller = Controller(cluster, provisioner);
        await controller.StartAsync();
        await using var client = await cluster.ConnectAsync();

        // 192 MiB is three 64 MiB nodes, started together; the second start fails.
        var error = await Assert.ThrowsAsync<ProvisioningException>(() => controller.Registry.RegisterAsync("doomed", new JobHints { CapacityBytes = 192L << 20 }));
        Assert.Contains("injected", error.Message, StringComparison.Ordinal);
        Assert.Contains("stopped the 2", error.Message, StringComparison.Ordinal);
        Assert.Equal(2, provisioner.Stopped.Count);

        // A stopped node's registration connection is closed; the metadata server reads that on its own thread.
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).All(n => n.State != NodeState.Live), "the stopped nodes leave the live list");
        Assert.Empty(controller.Registry.Jobs);
        Assert.All(cluster.Nodes, n => Assert.Null(n));
    }

    [Fact]
    public async Task ALoadSpikeTakesANodeFromTheWarmPoolWhichRefillsAndPoolNodesGetNoBlocks()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await ClusterAsync(nodes: 2);
        var controller = Controller(cluster, new InProcessProvisioner(cluster), time, ByHand with { Upper = 0.8, Cooldown = TimeSpan.FromSeconds(1), MaxNodes = 4 }, new WarmPoolOptions { NodesPerTier = 1 });
        await using var client = await cluster.ConnectAsync();
        uint standby;
        try
        {
            await controller.StartAsync();
            await WaitUntilAsync(() => Task.FromResult(controller.WarmPool!.Ready(NodeTier.Dram).Count == 1), "the warm pool has a node");
            standby = controller.WarmPool!.Ready(NodeTier.Dram)[0].NodeId!.Value;
            Assert.Equal(NodeState.Standby, (await cluster.Admin(client).GetNodesAsync()).Single(n => n.Id == standby).State);

            // 54 MiB of the live nodes' 64 MiB is over 80 %; the standby node's 32 MiB would make it 56 %, and none lands there.
            var job = await cluster.Admin(client).RegisterJobAsync("spike");
            for (var i = 0; i < 54; i++)
            {
                await job.PutAsync($"fill/{i}", Data($"fill/{i}", 1 << 20));
                Assert.DoesNotContain((await job.LookupAsync($"fill/{i}"))!.Blocks, b => b.NodeId == standby);
            }

            var nodes = await cluster.Admin(client).GetNodesAsync();
            Assert.Equal(0, nodes.Single(n => n.Id == standby).Used);
            Assert.Equal(NodeState.Standby, nodes.Single(n => n.Id == standby).State);

            // The telemetry tick (on the fake clock) samples the spike; the autoscaler claims the pool node.
            await WaitUntilAsync(
                () =>
                {
                    time.Advance(TimeSpan.FromSeconds(1));
                    return Task.FromResult(controller.Events.Last(1000).Any(e => e.Kind == "node-started"));
                },
                "a scale-up");
            var started = controller.Events.Last(1000).Single(e => e.Kind == "node-started");
            Assert.Equal(standby, started.NodeId);
            Assert.Contains("warm pool", started.Reason, StringComparison.Ordinal);
            Assert.Contains(controller.Events.Last(1000), e => e.Kind == "scale-up" && e.Reason.Contains("capacity", StringComparison.Ordinal));
            Assert.Equal(NodeState.Live, (await cluster.Admin(client).GetNodesAsync()).Single(n => n.Id == standby).State);

            // The claimed node serves: new objects land on it.
            await WaitUntilAsync(
                async () =>
                {
                    var key = $"after/{Guid.NewGuid():N}";
                    await job.PutAsync(key, Data(key, 256 << 10));
                    return (await job.LookupAsync(key))!.Blocks.Any(b => b.NodeId == standby);
                },
                "a block lands on the claimed node");

            // And the pool refills with another standby node.
            await WaitUntilAsync(() => Task.FromResult(controller.WarmPool.Ready(NodeTier.Dram).Count == 1), "the warm pool refills");
            var refill = controller.WarmPool.Ready(NodeTier.Dram)[0].NodeId!.Value;
            Assert.NotEqual(standby, refill);
            Assert.Equal(NodeState.Standby, (await cluster.Admin(client).GetNodesAsync()).Single(n => n.Id == refill).State);
            Assert.Contains(controller.Events.Last(1000), e => e.Kind == "pool-added" && e.NodeId == refill);
            standby = refill;
        }
        finally
        {
            await controller.DisposeAsync();
        }

        // Stopping the controller stops its idle pool node; the metadata server drops it (it held nothing).
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).All(n => n.Id != standby), "the idle pool node is stopped");
        Assert.Equal(3, (await cluster.Admin(client).GetNodesAsync()).Count(n => n.State == NodeState.Live));
    }

    [Fact]
    public async Task NodesARegistrationClaimsFromThePoolOrStartsAreRemovedWhenLoadDrops()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await ClusterAsync(nodes: 2);
        await using var controller = Controller(cluster, new InProcessProvisioner(cluster), time, ByHand with { MinNodes = 2, Cooldown = TimeSpan.FromSeconds(2) }, new WarmPoolOptions { NodesPerTier = 1 });
        await controller.StartAsync();
        await using var client = await cluster.ConnectAsync();
        await WaitUntilAsync(() => Task.FromResult(controller.WarmPool!.Ready(NodeTier.Dram).Count == 1), "the warm pool has a node");
        var pooled = controller.WarmPool!.Ready(NodeTier.Dram)[0].NodeId!.Value;
        var original = (await cluster.Admin(client).GetNodesAsync()).Where(n => n.State == NodeState.Live).Select(n => n.Id).ToHashSet();

        // 128 MiB is four 32 MiB nodes: the two running, the pool's one claimed, and one started.
        var job = await controller.Registry.RegisterAsync("big", new JobHints { CapacityBytes = 128L << 20 });
        var added = job.Weights.Weights.Keys.Where(id => !original.Contains(id)).Order().ToList();
        Assert.Equal(2, added.Count);
        Assert.Contains(pooled, added);

        // The job ends; the autoscaler (on the fake clock) drains and stops both, and keeps the two it never owned.
        await controller.Registry.DeregisterAsync(job.Id);
        await WaitUntilAsync(
            () =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return Task.FromResult(added.All(id => controller.Events.Last(1000).Any(e => e.Kind == "node-stopped" && e.NodeId == id)));
            },
            "both added nodes are removed");
        Assert.DoesNotContain(controller.Events.Last(1000), e => e.Kind is "node-stopped" or "scale-down" && original.Contains(e.NodeId!.Value));
        Assert.DoesNotContain(controller.Events.Last(1000), e => e.Kind == "scale-failed");
        Assert.Equal(original, (await cluster.Admin(client).GetNodesAsync()).Where(n => n.State == NodeState.Live).Select(n => n.Id).ToHashSet());
    }

    [Fact]
    public async Task AWarmPoolNodeDeclaredDeadIsStoppedAndReplacedAtOnceAndAnOlderSampleDropsNothing()
    {
        await using var cluster = await ClusterAsync(nodes: 2);
        // No start fails (failCall 0); it records what it stops.
        var provisioner = new FailingProvisioner(new InProcessProvisioner(cluster), failCall: 0);

        // Telemetry ticks every hour on the real clock: only the test's own samples reach the pool.
        await using var controller = Controller(cluster, provisioner, pool: new WarmPoolOptions { NodesPerTier = 1 }, telemetry: TimeSpan.FromHours(1));
        await controller.StartAsync();
        var pool = controller.WarmPool!;
        await WaitUntilAsync(() => Task.FromResult(pool.Ready(NodeTier.Dram).Count == 1), "the warm pool has a node");
        var idle = pool.Ready(NodeTier.Dram)[0];
        var id = idle.NodeId!.Value;
        var live = cluster.Nodes[0]!.NodeId;
        NodeSample Sample(uint node, NodeState state) => new(DateTimeOffset.UtcNow, node, NodeTier.Dram, state, 1, 0, 0, 0, 0, 0);

        // Taken before the pool node registered: it is missing, but newer than every node listed, so it stays.
        await pool.OnSampleAsync([Sample(live, NodeState.Live)], CancellationToken.None);
        Assert.Equal([id], pool.Ready(NodeTier.Dram).Select(n => n.NodeId!.Value));
        Assert.Empty(provisioner.Stopped);

        // Declared dead (missed heartbeats): out of the pool, stopped, and a replacement stands by.
        await pool.OnSampleAsync([Sample(live, NodeState.Live), Sample(id, NodeState.Dead)], CancellationToken.None);
        Assert.DoesNotContain(pool.Ready(NodeTier.Dram), n => n.NodeId == id);
        Assert.Contains(controller.Events.Last(100), e => e.Kind == "pool-lost" && e.NodeId == id);
        await WaitUntilAsync(() => Task.FromResult(pool.Ready(NodeTier.Dram).Count == 1), "the warm pool refills");
        var replacement = pool.Ready(NodeTier.Dram)[0].NodeId!.Value;
        Assert.NotEqual(id, replacement);
        await WaitUntilAsync(() => Task.FromResult(provisioner.Stopped.Any(n => n.Handle == idle.Handle)), "the dead pool node is stopped");
        Assert.Null(cluster.Nodes[int.Parse(idle.Handle, System.Globalization.CultureInfo.InvariantCulture)]);
    }

    [Fact]
    public async Task JobUsageIntegratesStoredBytesOverTheClockIntoGbSeconds()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await ClusterAsync(nodes: 2, capacity: 256L << 20);

        // Telemetry ticks only when the test polls: the fake clock never reaches an hour.
        await using var controller = Controller(cluster, provisioner: null, time, telemetry: TimeSpan.FromHours(1));
        await controller.StartAsync();
        await using var client = await cluster.ConnectAsync();
        using var api = new PocketControllerClient(controller.Url, cluster.Options.ClusterToken);
        var registration = await api.RegisterJobAsync("metered");
        var job = client.OpenJob(registration.JobId, registration.Token);
        await controller.Telemetry.PollAsync(CancellationToken.None);

        for (var i = 0; i < 3; i++)
        {
            await job.PutAsync($"k/{i}", Data($"k/{i}", 1_000_000));
        }

        var usage = await cluster.Admin(client).GetJobUsageAsync(registration.JobId);
        var stored = usage.BlockBytes + usage.InlineBytes;
        Assert.True(stored >= 3_000_000);

        // Held for 10 s, then 5 s more: 15 s of what was stored, nothing for the time before the puts.
        await controller.Telemetry.PollAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(10));
        await controller.Telemetry.PollAsync(CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(5));
        await controller.Telemetry.PollAsync(CancellationToken.None);

        var listed = (await api.GetJobAsync(registration.JobId))!;
        Assert.NotNull(listed.Usage);
        Assert.Equal(stored * 15 / 1e9, listed.Usage.GbSeconds, 9);
        Assert.Equal(usage.BytesByTier[NodeTier.Dram] * 15 / 1e9, listed.Usage.GbSecondsByTier[NodeTier.Dram], 9);
        Assert.True(listed.Usage.Requests >= 3, $"{listed.Usage.Requests} requests");
        Assert.NotNull(listed.Usage.MeteredSince);

        // Deleting stops the meter running: 20 s more add nothing.
        await job.DeleteAsync("k/", recursive: true);
        await controller.Telemetry.PollAsync(CancellationToken.None);
        var before = (await api.GetJobAsync(registration.JobId))!.Usage!.GbSeconds;
        time.Advance(TimeSpan.FromSeconds(20));
        await controller.Telemetry.PollAsync(CancellationToken.None);
        Assert.Equal(before, (await api.GetJobAsync(registration.JobId))!.Usage!.GbSeconds, 12);
    }

    [Fact]
    public async Task ANodeKilledDuringTheAutoscalersDrainLosesOnlyWhatWasNotMovedAndTheClusterServesOn()
    {
        await using var cluster = await ClusterAsync(nodes: 2, capacity: 96L << 20);

        // A slow device keeps the drain going long enough to kill the node part-way through.
        var slow = await cluster.AddNodeAsync(deviceFactory: o => new SimulatedDevice(new NativeMemoryDevice(o.Capacity, false), "slow", TimeSpan.Zero, 8e6));
        var victim = cluster.Nodes[slow]!.NodeId;
        await using var controller = Controller(cluster, new InProcessProvisioner(cluster), autoscaler: ByHand);
        await controller.StartAsync();
        controller.Autoscaler!.Adopt(Adopted(cluster, slow));
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("killed");
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [victim] = 1 });
        var data = new Dictionary<string, string>();
        for (var i = 0; i < 24; i++)
        {
            var key = $"k/{i}";
            var bytes = Data(key, 1_000_000 + i);
            data[key] = Hash(bytes);
            await job.PutAsync(key, bytes);
        }

        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double>());
        var removal = controller.Autoscaler.RemoveNodeAsync(victim, "test: drain the slow node");
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).Single(n => n.Id == victim).MovedBytes > 0, "the drain has moved something");
        await cluster.StopNodeAsync(slow);
        await removal;
        Assert.Contains(controller.Events.Last(1000), e => e.Kind == "scale-failed" && e.NodeId == victim && e.Reason.Contains("died", StringComparison.Ordinal));

        var moved = 0;
        foreach (var (key, hash) in data)
        {
            if ((await job.LookupAsync(key))!.Blocks.Any(b => b.NodeId == victim))
            {
                await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key));
            }
            else
            {
                moved++;
                Assert.Equal(hash, Hash(await job.GetAsync(key)));
            }
        }

        Assert.True(moved > 0, "objects moved before the kill stay readable");
        var after = Data("after", 2_000_000);
        await job.PutAsync("after", after);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after")));
    }

    /// <summary>A real provisioner whose stops wait for <see cref="Gate"/>, recording what it stops.</summary>
    private sealed class GatedProvisioner(IStorageProvisioner inner) : IStorageProvisioner
    {
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Stopping { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public List<ProvisionedNode> Stopped { get; } = [];

        public IReadOnlyCollection<NodeTier> Tiers => inner.Tiers;

        public Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken) => inner.StartNodeAsync(request, cancellationToken);

        public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
        {
            Stopping.TrySetResult();
            await Gate.Task.WaitAsync(cancellationToken);
            await inner.StopNodeAsync(node, cancellationToken);
            lock (Stopped)
            {
                Stopped.Add(node);
            }
        }
    }

    /// <summary>A real provisioner whose n-th start fails (after the others have begun), recording what it stops.</summary>
    private sealed class FailingProvisioner(IStorageProvisioner inner, int failCall) : IStorageProvisioner
    {
        private int _calls;

        public List<ProvisionedNode> Stopped { get; } = [];

        public IReadOnlyCollection<NodeTier> Tiers => inner.Tiers;

        public async Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _calls) == failCall)
            {
                await Task.Yield();
                throw new ProvisioningException("injected start failure");
            }

            return await inner.StartNodeAsync(request, cancellationToken);
        }

        public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
        {
            await inner.StopNodeAsync(node, cancellationToken);
            lock (Stopped)
            {
                Stopped.Add(node);
            }
        }
    }
}
