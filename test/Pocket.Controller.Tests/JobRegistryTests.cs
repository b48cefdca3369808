using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The registry against a real in-process cluster: node starts, filling, shares, leases.</summary>
public sealed class JobRegistryTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task JobsWithoutHintsShareTheRunningNodesAndStartNone()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);
        var nodes = h.Cluster.Nodes.Select(n => n!.NodeId).Order().ToList();

        // Seven hint-less registrations once grew a 2-node cluster to 10 nodes. Here a hinted job leaves 64 MiB of
        // each node, seven hint-less jobs (19.2 MiB each) take more than that, and one more comes: all on the two nodes.
        await h.Registry.RegisterAsync("filler", new JobHints { CapacityBytes = 2 * ControllerHarness.NodeCapacity - (128 * MiB) });
        var hintless = new List<JobRecord>();
        for (var i = 0; i < 8; i++)
        {
            hintless.Add(await h.Registry.RegisterAsync($"plain-{i}", JobHints.None));
        }

        Assert.Equal(2, h.Cluster.Nodes.Count);
        Assert.Equal(2, (await h.Cluster.Admin(h.Client).GetNodesAsync()).Count);
        Assert.All(hintless, job =>
        {
            Assert.True(job.Requirement.IsDefault);
            Assert.Equal(nodes, job.Weights.Weights.Keys.Order());
        });

        // Each is one function's worth: 600 Mb/s and 7.5 % of a node.
        Assert.Equal(600e6, hintless[0].Requirement.ThroughputBitsPerSecond);
        Assert.Equal(ControllerHarness.NodeCapacity * 0.075, hintless[0].Requirement.CapacityBytes, 1.0);

        // They are real jobs: data goes in and comes out.
        var handle = h.Client.OpenJob(hintless[^1].Id, hintless[^1].Token);
        await handle.PutAsync("k", new byte[1 << 20]);
        Assert.Equal(1 << 20, (await handle.GetAsync("k")).Length);
    }

    [Fact]
    public async Task MissingNodesAreStartedAndRegistrationWaitsForThem()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);

        // 1 GiB is four 256 MiB nodes; two run, so two are started through the in-process provisioner.
        var job = await h.Registry.RegisterAsync("big", new JobHints { CapacityBytes = 1L << 30 });

        Assert.Equal(4, h.Cluster.Nodes.Count);
        Assert.Equal(4, (await h.Cluster.Admin(h.Client).GetNodesAsync()).Count(n => n.State == NodeState.Live));
        Assert.Equal(4, job.Requirement.NodesNeeded);
        Assert.False(job.Requirement.ThroughputBound);
        Assert.Equal(4, job.Weights.Weights.Count);
        Assert.All(job.Weights.Weights.Values, w => Assert.Equal(0.25, w, 9));
        Assert.Equal(h.Cluster.Nodes.Select(n => n!.NodeId).Order(), job.Weights.Weights.Keys.Order());
    }

    [Fact]
    public async Task PartlyUsedNodesAreFilledBeforeEmptyOnes()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);
        var first = await h.Registry.RegisterAsync("first", new JobHints { CapacityBytes = 128 * MiB });
        var usedNodes = first.Weights.Weights.Keys.Order().ToList();
        Assert.Equal(2, usedNodes.Count);

        // A third, empty node joins; the next job still goes to the two partly used ones.
        var index = await h.Cluster.AddNodeAsync();
        var emptyNode = h.Cluster.Nodes[index]!.NodeId;
        var second = await h.Registry.RegisterAsync("second", new JobHints { CapacityBytes = 256 * MiB });

        Assert.Equal(usedNodes, second.Weights.Weights.Keys.Order());
        Assert.DoesNotContain(emptyNode, second.Weights.Weights.Keys);
        Assert.Equal(3, h.Cluster.Nodes.Count);

        // Each of the two holds 64 + 128 MiB of its 256 MiB now.
        var allocations = h.Registry.Allocations;
        Assert.All(usedNodes, id => Assert.Equal(192.0 * MiB, allocations[id].Bytes, 1.0));
    }

    [Fact]
    public async Task DeregistrationFreesTheDataAndReturnsTheShares()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);
        var job = await h.Registry.RegisterAsync("scratch", new JobHints { CapacityBytes = 64 * MiB });
        var handle = h.Client.OpenJob(job.Id, job.Token);
        for (var i = 0; i < 8; i++)
        {
            await handle.PutAsync($"part/{i}", new byte[1 << 20]);
        }

        Assert.Equal(8 * MiB, await h.UsedBytesAsync());
        Assert.NotEmpty(h.Registry.Allocations);

        var ended = await h.Registry.DeregisterAsync(job.Id);

        Assert.NotNull(ended);
        Assert.Equal(JobEndReason.Deregistered, ended.Reason);
        Assert.Equal(8, ended.ObjectsFreed);
        Assert.Equal(0, await h.UsedBytesAsync());
        Assert.Empty(h.Registry.Allocations);
        Assert.Empty(h.Registry.Jobs);
        Assert.Null(await h.Registry.DeregisterAsync(job.Id));
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await handle.GetAsync("part/0"));
    }

    [Fact]
    public async Task RequestsRenewTheLeaseAndIdleJobsAreReclaimed()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2025-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var options = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), TimeProvider = time, LeaseDuration = TimeSpan.FromMinutes(5) };
        await using var h = await ControllerHarness.StartAsync(nodes: 2, registry: options);
        var busy = await h.Registry.RegisterAsync("busy", new JobHints { CapacityBytes = 64 * MiB });
        var idle = await h.Registry.RegisterAsync("idle", new JobHints { CapacityBytes = 32 * MiB });
        var idleHandle = h.Client.OpenJob(idle.Id, idle.Token);
        await idleHandle.PutAsync("kept-until-lease-ends", new byte[3 << 20]);
        var busyHandle = h.Client.OpenJob(busy.Id, busy.Token);

        // A pass records the counts: idle's put renews its lease from now.
        await h.Registry.CheckLeasesAsync();

        time.Advance(TimeSpan.FromMinutes(4));
        await busyHandle.PutAsync("tick", new byte[10]);
        await h.Registry.CheckLeasesAsync();
        Assert.Equal(2, h.Registry.Jobs.Count);

        time.Advance(TimeSpan.FromMinutes(4));
        await h.Registry.CheckLeasesAsync();

        // 8 minutes after its last request the idle job is gone, data and shares; the busy one renewed at minute 4.
        Assert.Equal([busy.Id], h.Registry.Jobs.Select(j => j.Id));
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), h.Registry.Find(busy.Id)!.LeaseExpiresAt);
        Assert.Equal(0, (await h.Cluster.Admin(h.Client).GetNodesAsync()).Sum(n => n.Used));
        var allocations = h.Registry.Allocations;
        Assert.Equal(busy.Shares.Count, allocations.Count);
        Assert.All(busy.Shares, s => Assert.Equal(s.Bytes, allocations[s.NodeId].Bytes, 1.0));
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await idleHandle.GetAsync("kept-until-lease-ends"));

        time.Advance(TimeSpan.FromMinutes(2));
        await h.Registry.CheckLeasesAsync();
        Assert.Empty(h.Registry.Jobs);
        Assert.Empty(h.Registry.Allocations);
    }

    [Fact]
    public async Task TheLeaseClockRunsByItself()
    {
        var time = new FakeTimeProvider();
        var options = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), TimeProvider = time, LeaseCheckInterval = TimeSpan.FromSeconds(5) };
        await using var h = await ControllerHarness.StartAsync(nodes: 2, registry: options);
        var ended = new TaskCompletionSource<EndedJob>(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Registry.JobEnded += e => ended.TrySetResult(e);
        var job = await h.Registry.RegisterAsync("forgotten", JobHints.None);
        await h.Client.OpenJob(job.Id, job.Token).PutAsync("data", new byte[2 << 20]);

        // One pass sees the put before the clock jumps; every pass after that sees no new request.
        await h.Registry.CheckLeasesAsync();
        time.Advance(TimeSpan.FromMinutes(6));
        var result = await ended.Task.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(job.Id, result.Job.Id);
        Assert.Equal(JobEndReason.LeaseExpired, result.Reason);
        Assert.Equal(1, result.ObjectsFreed);
        Assert.Equal(0, await h.UsedBytesAsync());
    }

    [Fact]
    public async Task AnIdleJobsNextRequestSaysItsLeaseExpiredWhenAndHowToLengthenIt()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2025-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var options = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), TimeProvider = time, LeaseDuration = TimeSpan.FromMinutes(5) };
        await using var h = await ControllerHarness.StartAsync(nodes: 2, registry: options);
        var job = await h.Registry.RegisterAsync("idle", JobHints.None);
        var handle = h.Client.OpenJob(job.Id, job.Token);
        await handle.PutAsync("data", new byte[100]);
        await h.Registry.CheckLeasesAsync();

        time.Advance(TimeSpan.FromMinutes(6));
        await h.Registry.CheckLeasesAsync();

        Assert.Null(h.Registry.Find(job.Id));
        var error = await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await handle.GetAsync("data"));
        Assert.Equal(
            $"job {job.Id} has ended: its lease expired at 2025-01-01T00:05:00Z after 5 min without requests, and its data was freed; "
            + "register again, and keep it busy or register it with a longer lease (pocket job register --lease 1h; HTTP: \"lease\": \"1h\")",
            error.Message);
    }

    [Fact]
    public async Task AJobsOwnLeaseIsKeptRenewedAndBoundedByTheControllersMaximum()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2025-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var options = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), TimeProvider = time, LeaseDuration = TimeSpan.FromMinutes(5), MaxLeaseDuration = TimeSpan.FromDays(1) };
        await using var h = await ControllerHarness.StartAsync(nodes: 2, registry: options);
        var job = await h.Registry.RegisterAsync("long", new JobHints { Lease = TimeSpan.FromHours(1) });
        Assert.Equal(TimeSpan.FromHours(1), job.Lease);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromHours(1), job.LeaseExpiresAt);
        await h.Registry.CheckLeasesAsync();

        // Past the default lease, within its own: kept, and a request renews it by its own length.
        time.Advance(TimeSpan.FromMinutes(30));
        await h.Registry.CheckLeasesAsync();
        Assert.NotNull(h.Registry.Find(job.Id));
        await h.Client.OpenJob(job.Id, job.Token).PutAsync("tick", new byte[1]);
        await h.Registry.CheckLeasesAsync();
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromHours(1), h.Registry.Find(job.Id)!.LeaseExpiresAt);

        time.Advance(TimeSpan.FromMinutes(61));
        await h.Registry.CheckLeasesAsync();
        Assert.Null(h.Registry.Find(job.Id));
        var error = await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await h.Client.OpenJob(job.Id, job.Token).GetAsync("tick"));
        Assert.Contains("after 1 h without requests", error.Message, StringComparison.Ordinal);
        Assert.Contains("--lease 12h", error.Message, StringComparison.Ordinal);

        var tooLong = await Assert.ThrowsAsync<ArgumentException>(() => h.Registry.RegisterAsync("forever", new JobHints { Lease = TimeSpan.FromDays(30) }));
        Assert.Equal("lease", tooLong.ParamName);
        Assert.Contains("longer than this controller allows (1 d)", tooLong.Message, StringComparison.Ordinal);
        var negative = Assert.Throws<ArgumentException>(() => new JobHints { Lease = TimeSpan.FromSeconds(-1) }.Validate());
        Assert.Equal("lease", negative.ParamName);
    }

    [Fact]
    public async Task JobsRemovedBehindTheControllersBackAreForgotten()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);
        var job = await h.Registry.RegisterAsync("orphan", JobHints.None);
        await h.Cluster.Admin(h.Client).DeregisterJobAsync(job.Id);

        await h.Registry.CheckLeasesAsync();

        Assert.Empty(h.Registry.Jobs);
        Assert.Empty(h.Registry.Allocations);
    }

    [Fact]
    public async Task WithoutAProvisionerAShortClusterFailsClearly()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2, provisioner: false);
        var error = await Assert.ThrowsAsync<ProvisioningException>(() => h.Registry.RegisterAsync("big", new JobHints { CapacityBytes = 1L << 30 }));

        Assert.Contains("2 more dram nodes", error.Message, StringComparison.Ordinal);
        Assert.Contains("cannot start", error.Message, StringComparison.Ordinal);
        Assert.Empty(h.Registry.Jobs);

        // Nothing half-done: no job on the metadata server, and a job that fits still registers.
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => h.Cluster.Admin(h.Client).GetJobUsageAsync("big-1"));
        await h.Registry.RegisterAsync("small", new JobHints { CapacityBytes = 64 * MiB });
    }

    [Fact]
    public async Task NodesThatNeverRegisterTimeOutWithAClearError()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false });
        await using var admin = await cluster.ConnectAsync();
        var options = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), NodeStartTimeout = TimeSpan.FromMilliseconds(300) };
        await using var registry = new JobRegistry(cluster.Admin(admin), new NeverRegisters(), options, NullLoggerFactory.Instance);

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => registry.RegisterAsync("stuck", JobHints.None));

        Assert.Contains("started 2 dram nodes, but 0 registered", error.Message, StringComparison.Ordinal);
        Assert.Empty(registry.Jobs);
    }

    [Fact]
    public async Task ProvisionerFailuresAreReported()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false });
        await using var admin = await cluster.ConnectAsync();
        await using var registry = new JobRegistry(cluster.Admin(admin), new Broken(), new JobRegistryOptions { Sizing = ControllerHarness.Sizing() }, NullLoggerFactory.Instance);

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => registry.RegisterAsync("doomed", JobHints.None));

        Assert.Contains("quota exhausted", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BadNamesAndHintsNameTheField()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 2);
        Assert.Equal("name", (await Assert.ThrowsAsync<ArgumentException>(() => h.Registry.RegisterAsync("no spaces", JobHints.None))).ParamName);
        Assert.Equal("name", (await Assert.ThrowsAsync<ArgumentException>(() => h.Registry.RegisterAsync(new string('a', 65), JobHints.None))).ParamName);
        Assert.Equal("functions", (await Assert.ThrowsAsync<ArgumentException>(() => h.Registry.RegisterAsync("ok", new JobHints { Functions = -3 }))).ParamName);
    }

    /// <summary>A provisioner whose nodes are "started" but never show up at the metadata server (a stuck pod).</summary>
    private sealed class NeverRegisters : IStorageProvisioner
    {
        private int _next;

        public IReadOnlyCollection<NodeTier> Tiers { get; } = [NodeTier.Dram];

        public Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken) =>
            Task.FromResult(new ProvisionedNode(request.Tier, $"pod-{Interlocked.Increment(ref _next)}", null, null));

        public Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class Broken : IStorageProvisioner
    {
        public IReadOnlyCollection<NodeTier> Tiers { get; } = [NodeTier.Dram];

        public Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("quota exhausted");

        public Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
