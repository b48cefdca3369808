using Microsoft.Extensions.Time.Testing;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The scaling policy as a pure function: band, cooldown, min and max nodes, no flapping.</summary>
public sealed class AutoscalerPolicyTests
{
    private const long Gib = 1L << 30;

    // The paper's band, so the figures below read as the paper's; the defaults are tested by the simulator's traces.
    private static readonly AutoscalerOptions Options = new()
    {
        Lower = 0.6,
        Upper = 0.8,
        Cooldown = TimeSpan.FromSeconds(10),
        NodeBandwidthBytesPerSecond = new Dictionary<NodeTier, double> { [NodeTier.Dram] = 1e9 },
    };

    private static double Bandwidth(NodeTier tier) => 1e9;

    private static NodeSample Node(FakeTimeProvider time, uint id, double used, double cpu = 0.1, double net = 0, NodeState state = NodeState.Live) =>
        new(time.GetUtcNow(), id, NodeTier.Dram, state, 10 * Gib, (long)(used * 10 * Gib), cpu, net / 2, net / 2, 0);

    private static (ScalingDecision Decision, AutoscalerState State) Decide(FakeTimeProvider time, AutoscalerState state, IReadOnlySet<uint> removable, params NodeSample[] nodes) =>
        AutoscalerPolicy.Decide(nodes, removable, Options, Bandwidth, state, time.GetUtcNow());

    [Fact]
    public void WarmPoolNodesAreNotServingCapacity()
    {
        var time = new FakeTimeProvider();

        // Two live nodes at 85 % plus an empty standby node: counting it would put the tier at 57 %.
        var (decision, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint> { 3 }, Node(time, 1, 0.85), Node(time, 2, 0.85), Node(time, 3, 0, state: NodeState.Standby));
        Assert.Equal(ScalingAction.AddNode, decision.Action);
        var utilisation = Assert.Single(AutoscalerPolicy.Utilisation([Node(time, 1, 0.85), Node(time, 3, 0, state: NodeState.Standby)], Options, Bandwidth));
        Assert.Equal(1, utilisation.Nodes);

        // Nor is a standby node ever the one removed.
        var state = AutoscalerState.Initial;
        ScalingDecision? removal = null;
        for (var i = 0; i < 15 && removal is null; i++)
        {
            (decision, state) = Decide(time, state, new HashSet<uint> { 1, 2, 3, 4 }, Node(time, 1, 0.1), Node(time, 2, 0.1), Node(time, 3, 0, state: NodeState.Standby), Node(time, 4, 0.1));
            removal = decision.Action == ScalingAction.RemoveNode ? decision : null;
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.NotNull(removal);
        Assert.NotEqual(3u, removal.NodeId);
    }

    [Fact]
    public void RegistrationsThatDeclareMoreThanTheTierServesAddANodeBeforeTheirLoadShows()
    {
        var time = new FakeTimeProvider();
        NodeSample[] Nodes() => [Node(time, 1, 0.05, net: 0.5e9), Node(time, 2, 0.05, net: 0.5e9)];

        // Two nodes at 50 % of their network; nothing registered lately: nothing to do.
        var quiet = new List<RegisteredJob> { new(NodeTier.Dram, time.GetUtcNow() - TimeSpan.FromMinutes(1), 8e9, Gib) };
        var (idle, _) = AutoscalerPolicy.Decide(Nodes(), new HashSet<uint>(), Options, Bandwidth, AutoscalerState.Initial, time.GetUtcNow(), quiet);
        Assert.Equal(ScalingAction.None, idle.Action);

        // A job that registered a second ago declared 12 Gb/s (1.5 nodes' worth): with the 1 node's worth already served
        // that leaves two nodes short once it arrives, so a node starts now, one (how fast it arrives is not declared).
        var burst = quiet.Append(new RegisteredJob(NodeTier.Dram, time.GetUtcNow() - TimeSpan.FromSeconds(1), 12e9, Gib)).ToList();
        var (add, _) = AutoscalerPolicy.Decide(Nodes(), new HashSet<uint>(), Options, Bandwidth, AutoscalerState.Initial, time.GetUtcNow(), burst);
        Assert.Equal(ScalingAction.AddNode, add.Action);
        Assert.Equal(1, add.Count);
        Assert.Contains("registered", add.Reason, StringComparison.Ordinal);

        // Without what the jobs declared (hint-less jobs), the samples alone decide: nothing yet.
        var blind = burst.Select(j => j with { PeakBitsPerSecond = null, CapacityBytes = null }).ToList();
        var (none, _) = AutoscalerPolicy.Decide(Nodes(), new HashSet<uint>(), Options, Bandwidth, AutoscalerState.Initial, time.GetUtcNow(), blind);
        Assert.Equal(ScalingAction.None, none.Action);
    }

    [Fact]
    public void DeclaredPeaksThatTheNodesCarryAtFullAddNoNodeAndEndedJobsGiveBackEveryIdleNodeInOneAction()
    {
        var time = new FakeTimeProvider();

        // Two nodes saturated at 16 Gb/s by jobs that declared 16 Gb/s in all: past the band, but more nodes would idle.
        var full = new List<RegisteredJob> { new(NodeTier.Dram, time.GetUtcNow() - TimeSpan.FromMinutes(1), 16e9, Gib) };
        NodeSample[] Saturated() => [Node(time, 1, 0.05, cpu: 0.5, net: 1e9), Node(time, 2, 0.05, cpu: 0.5, net: 1e9)];
        var (held, _) = AutoscalerPolicy.Decide(Saturated(), new HashSet<uint>(), Options, Bandwidth, AutoscalerState.Initial, time.GetUtcNow(), full);
        Assert.Equal(ScalingAction.None, held.Action);

        // A job using more than it declared is no promise: the band decides again.
        var under = new List<RegisteredJob> { new(NodeTier.Dram, time.GetUtcNow() - TimeSpan.FromMinutes(1), 8e9, Gib) };
        var (added, _) = AutoscalerPolicy.Decide(Saturated(), new HashSet<uint>(), Options, Bandwidth, AutoscalerState.Initial, time.GetUtcNow(), under);
        Assert.Equal(ScalingAction.AddNode, added.Action);

        // Every job has ended and the nodes are empty: after the quiet period all but the minimum leave in one action.
        var removable = new HashSet<uint> { 3, 4, 5 };
        NodeSample[] Empty() => [Node(time, 1, 0, cpu: 0), Node(time, 2, 0, cpu: 0), Node(time, 3, 0, cpu: 0), Node(time, 4, 0, cpu: 0), Node(time, 5, 0, cpu: 0)];
        var state = AutoscalerState.Initial;
        ScalingDecision? removal = null;
        for (var i = 0; i <= Options.Cooldown.TotalSeconds && removal is null; i++)
        {
            (var decision, state) = AutoscalerPolicy.Decide(Empty(), removable, Options, Bandwidth, state, time.GetUtcNow(), []);
            removal = decision.Action == ScalingAction.RemoveNode ? decision : null;
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.NotNull(removal);
        Assert.Equal(3, removal.NodeIds.Count);
    }

    [Fact]
    public void AnyResourceAboveTheUpperBoundAddsANodeOfThatTier()
    {
        var time = new FakeTimeProvider();
        var (capacity, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.85), Node(time, 2, 0.9));
        Assert.Equal(ScalingAction.AddNode, capacity.Action);
        Assert.Equal(NodeTier.Dram, capacity.Tier);
        Assert.Contains("capacity", capacity.Reason, StringComparison.Ordinal);

        var (cpu, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.1, cpu: 0.95), Node(time, 2, 0.1, cpu: 0.9));
        Assert.Equal(ScalingAction.AddNode, cpu.Action);
        Assert.Contains("cpu", cpu.Reason, StringComparison.Ordinal);

        var (network, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.1, net: 0.9e9), Node(time, 2, 0.1, net: 0.9e9));
        Assert.Equal(ScalingAction.AddNode, network.Action);
        Assert.Contains("network", network.Reason, StringComparison.Ordinal);

        var (inside, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.7), Node(time, 2, 0.7));
        Assert.Equal(ScalingAction.None, inside.Action);
    }

    [Fact]
    public void ATierBelowTheLowerBoundShrinksOnlyAfterTheCooldownAndRemovesTheLeastUsedNode()
    {
        var time = new FakeTimeProvider();
        var removable = new HashSet<uint> { 2, 3 };
        NodeSample[] Nodes() => [Node(time, 1, 0.1), Node(time, 2, 0.2), Node(time, 3, 0.05)];
        var (first, state) = Decide(time, AutoscalerState.Initial, removable, Nodes());
        Assert.Equal(ScalingAction.None, first.Action);
        time.Advance(TimeSpan.FromSeconds(9));
        (var early, state) = Decide(time, state, removable, Nodes());
        Assert.Equal(ScalingAction.None, early.Action);
        time.Advance(TimeSpan.FromSeconds(1));
        (var remove, state) = Decide(time, state, removable, Nodes());
        Assert.Equal(ScalingAction.RemoveNode, remove.Action);
        Assert.Equal(3u, remove.NodeId);
        Assert.Contains("least used", remove.Reason, StringComparison.Ordinal);

        // Right after an action the cooldown holds removals, but not pressure: nodes are added at once.
        time.Advance(TimeSpan.FromSeconds(1));
        var (held, _) = Decide(time, state, removable, Node(time, 1, 0.1), Node(time, 2, 0.1), Node(time, 3, 0.1));
        Assert.Equal(ScalingAction.None, held.Action);
        var (pressed, _) = Decide(time, state, removable, Node(time, 1, 0.95), Node(time, 2, 0.95));
        Assert.Equal(ScalingAction.AddNode, pressed.Action);
    }

    [Fact]
    public void PressureAddsAtOnceEveryNodeTheLoadNeedsAndARisingLoadAddsBeforeTheBoundIsCrossed()
    {
        var time = new FakeTimeProvider();

        // Two nodes 95 % full hold 1.9 nodes' worth, which needs ceil(1.9 / 0.8) = 3 nodes: one more.
        var (one, _) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.95), Node(time, 2, 0.95));
        Assert.Equal(1, one.Count);

        // A load rising 0.3 nodes' worth a second is expected 1.5 higher in 5 s: at 1.2 of 2 nodes (60 %) it is 2.7,
        // which needs 4 nodes at 80 %: 2 are added now, while the tier is still inside the band.
        var (_, state) = Decide(time, AutoscalerState.Initial, new HashSet<uint>(), Node(time, 1, 0.1, net: 0.3e9), Node(time, 2, 0.1, net: 0.3e9));
        time.Advance(TimeSpan.FromSeconds(1));
        (var early, state) = Decide(time, state, new HashSet<uint>(), Node(time, 1, 0.1, net: 0.45e9), Node(time, 2, 0.1, net: 0.45e9));
        Assert.Equal(ScalingAction.None, early.Action);
        time.Advance(TimeSpan.FromSeconds(1));
        var (rising, _) = Decide(time, state, new HashSet<uint>(), Node(time, 1, 0.1, net: 0.6e9), Node(time, 2, 0.1, net: 0.6e9));
        Assert.Equal(ScalingAction.AddNode, rising.Action);
        Assert.Equal(2, rising.Count);
        Assert.Contains("rising", rising.Reason, StringComparison.Ordinal);

        // The same level with noise around it is no ramp.
        state = AutoscalerState.Initial;
        foreach (var net in new[] { 0.62e9, 0.55e9, 0.66e9, 0.52e9, 0.6e9, 0.57e9, 0.64e9 })
        {
            time.Advance(TimeSpan.FromSeconds(1));
            (var level, state) = Decide(time, state, new HashSet<uint>(), Node(time, 1, 0.1, net: net), Node(time, 2, 0.1, net: net));
            Assert.Equal(ScalingAction.None, level.Action);
        }
    }

    [Fact]
    public void ABriefRiseRestartsTheQuietPeriod()
    {
        var time = new FakeTimeProvider();
        var removable = new HashSet<uint> { 3 };
        var (_, state) = Decide(time, AutoscalerState.Initial, removable, Node(time, 1, 0.1), Node(time, 2, 0.1), Node(time, 3, 0.1));
        time.Advance(TimeSpan.FromSeconds(6));
        (_, state) = Decide(time, state, removable, Node(time, 1, 0.75), Node(time, 2, 0.75), Node(time, 3, 0.75));
        time.Advance(TimeSpan.FromSeconds(6));
        var (decision, _) = Decide(time, state, removable, Node(time, 1, 0.1), Node(time, 2, 0.1), Node(time, 3, 0.1));
        Assert.Equal(ScalingAction.None, decision.Action);
    }

    [Fact]
    public void NeverAboveMaxNeverBelowMinNeverARemovalThatWouldOverflowTheRest()
    {
        var time = new FakeTimeProvider();
        var atMax = Enumerable.Range(1, 16).Select(i => Node(time, (uint)i, 0.95)).ToArray();
        Assert.Equal(ScalingAction.None, Decide(time, AutoscalerState.Initial, new HashSet<uint>(), atMax).Decision.Action);

        var quiet = new AutoscalerState(null, new Dictionary<NodeTier, DateTimeOffset> { [NodeTier.Dram] = time.GetUtcNow() });
        time.Advance(TimeSpan.FromMinutes(1));
        var atMin = Decide(time, quiet, new HashSet<uint> { 1, 2 }, Node(time, 1, 0.01), Node(time, 2, 0.01));
        Assert.Equal(ScalingAction.None, atMin.Decision.Action);

        // 3 nodes at 55 %: without one, the other two would hold 82 %, so nothing is removed.
        var tight = Decide(time, quiet, new HashSet<uint> { 3 }, Node(time, 1, 0.55), Node(time, 2, 0.55), Node(time, 3, 0.55));
        Assert.Equal(ScalingAction.None, tight.Decision.Action);

        // Only nodes the controller can stop are candidates; a draining node blocks another removal.
        var none = Decide(time, quiet, new HashSet<uint>(), Node(time, 1, 0.01), Node(time, 2, 0.01), Node(time, 3, 0.01));
        Assert.Equal(ScalingAction.None, none.Decision.Action);
        var draining = Decide(time, quiet, new HashSet<uint> { 3, 4 }, Node(time, 1, 0.01), Node(time, 2, 0.01), Node(time, 3, 0.01), Node(time, 4, 0.01, state: NodeState.Draining));
        Assert.Equal(ScalingAction.None, draining.Decision.Action);
    }

    [Fact]
    public void OptionsAreValidated()
    {
        new AutoscalerOptions().Validate();
        Assert.Throws<ArgumentException>(() => new AutoscalerOptions { Lower = 0.8, Upper = 0.6 }.Validate());
        Assert.Throws<ArgumentException>(() => new AutoscalerOptions { Upper = 1.5 }.Validate());
        Assert.Throws<ArgumentException>(() => new AutoscalerOptions { MinNodes = 5, MaxNodes = 4 }.Validate());
        Assert.Throws<ArgumentException>(() => new AutoscalerOptions { Interval = TimeSpan.Zero }.Validate());
        Assert.Throws<ArgumentException>(() => new AutoscalerOptions { NewNodeCapacityBytes = 0 }.Validate());
    }
}
