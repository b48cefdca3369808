using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Controller;

/// <summary>
/// Settings of the <see cref="Autoscaler"/>: the band (80-95 %; the paper's 60-80 % left a third of the nodes idle,
/// docs/controller.md), node limits, the cooldown and the lead.
/// </summary>
public sealed record AutoscalerOptions
{
    /// <summary>
    /// When every resource of a tier stays below this fraction for <see cref="Cooldown"/>, the nodes its load does not
    /// need (at <see cref="Upper"/>) are drained and removed.
    /// </summary>
    public double Lower { get; init; } = 0.8;

    /// <summary>When any resource of a tier goes above this fraction, now or <see cref="Lead"/> ahead, nodes of that tier are added.</summary>
    public double Upper { get; init; } = 0.95;

    /// <summary>Live storage nodes never fewer than this (the paper always runs two).</summary>
    public int MinNodes { get; init; } = 2;

    /// <summary>Live storage nodes never more than this.</summary>
    public int MaxNodes { get; init; } = 16;

    /// <summary>Quiet time after each action, and how long a tier must stay below the band before it shrinks.</summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How far ahead a tier's rising load is projected (its rise per second times this): about the time a node takes
    /// from the decision to serving, so nodes are added before a ramp outgrows the tier, not after.
    /// </summary>
    public TimeSpan Lead { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How often utilisation is sampled and the policy evaluated.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Network bandwidth of one node (rx + tx), bytes/s, per tier; tiers not listed use the sizing node class.</summary>
    public IReadOnlyDictionary<NodeTier, double> NodeBandwidthBytesPerSecond { get; init; } = new Dictionary<NodeTier, double>();

    /// <summary>Capacity of nodes the autoscaler starts; null: the sizing node class of the tier.</summary>
    public long? NewNodeCapacityBytes { get; init; }

    /// <summary>Resources the policy watches; all by default (in-process test clusters share one process's CPU, so they watch capacity only).</summary>
    public ScalingResources Resources { get; init; } = ScalingResources.All;

    /// <summary>How long a drain may take before the autoscaler gives up on it (the node then stays draining).</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!(Lower > 0) || !(Upper <= 1) || !(Lower < Upper))
        {
            throw new ArgumentException("autoscaler bounds need 0 < lower < upper <= 1");
        }

        if (MinNodes < 1 || MaxNodes < MinNodes)
        {
            throw new ArgumentException("autoscaler needs 1 <= min nodes <= max nodes");
        }

        if (Cooldown < TimeSpan.Zero || Lead < TimeSpan.Zero || Interval <= TimeSpan.Zero || DrainTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("autoscaler cooldown and lead must be >= 0, interval and drain timeout positive");
        }

        if (NodeBandwidthBytesPerSecond.Values.Any(b => !(b > 0) || !double.IsFinite(b)))
        {
            throw new ArgumentException("node bandwidth must be a positive number of bytes/s");
        }

        if (NewNodeCapacityBytes is <= 0)
        {
            throw new ArgumentException("new node capacity must be positive");
        }
    }
}

/// <summary>Resources whose utilisation the autoscaler keeps inside the band.</summary>
[Flags]
public enum ScalingResources
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>CPU of the nodes (0-1 each).</summary>
    Cpu = 1,

    /// <summary>Network rx + tx against the node bandwidth.</summary>
    Network = 2,

    /// <summary>Bytes used against capacity.</summary>
    Capacity = 4,

    /// <summary>All three.</summary>
    All = Cpu | Network | Capacity,
}

/// <summary>What the policy wants done.</summary>
public enum ScalingAction
{
    /// <summary>Nothing.</summary>
    None,

    /// <summary>Start a node of <see cref="ScalingDecision.Tier"/>.</summary>
    AddNode,

    /// <summary>Drain and remove <see cref="ScalingDecision.NodeId"/>.</summary>
    RemoveNode,
}

/// <summary>One decision of the policy, with its reason.</summary>
public sealed record ScalingDecision(ScalingAction Action, NodeTier Tier, uint? NodeId, string Reason)
{
    /// <summary>No action.</summary>
    public static ScalingDecision None { get; } = new(ScalingAction.None, NodeTier.Dram, null, "");

    /// <summary>Nodes to start at once (<see cref="ScalingAction.AddNode"/>): enough for the load expected when they serve.</summary>
    public int Count { get; init; } = 1;

    /// <summary>Nodes to drain and remove at once (<see cref="ScalingAction.RemoveNode"/>); <see cref="NodeId"/> is the first.</summary>
    public IReadOnlyList<uint> NodeIds { get; init; } = [];
}

/// <summary>Utilisation of one tier's live nodes, each resource as a fraction of what the nodes offer.</summary>
public sealed record TierUtilisation(NodeTier Tier, int Nodes, double Cpu, double Network, double Capacity)
{
    /// <summary>The highest of the three.</summary>
    public double Max => Math.Max(Cpu, Math.Max(Network, Capacity));

    /// <summary>The load in nodes' worth: how many fully used nodes the busiest resource amounts to.</summary>
    public double Need => Max * Nodes;
}

/// <summary>A tier's load (<see cref="TierUtilisation.Need"/>) at one evaluation, remembered for the next one's trend.</summary>
public readonly record struct TierLoad(DateTimeOffset At, double Need);

/// <summary>What the policy remembers between evaluations (it is otherwise a pure function).</summary>
/// <param name="LastAction">When the last action was taken; removals wait the cooldown from there.</param>
/// <param name="BelowSince">Per tier, since when it has had more nodes than its load needs (and the load was not rising).</param>
public sealed record AutoscalerState(DateTimeOffset? LastAction, IReadOnlyDictionary<NodeTier, DateTimeOffset> BelowSince)
{
    /// <summary>Nothing yet.</summary>
    public static AutoscalerState Initial { get; } = new(null, new Dictionary<NodeTier, DateTimeOffset>());

    /// <summary>Per tier, the load at each evaluation of the last two leads (oldest first), for its trend.</summary>
    public IReadOnlyDictionary<NodeTier, IReadOnlyList<TierLoad>> Loads { get; init; } = new Dictionary<NodeTier, IReadOnlyList<TierLoad>>();

    /// <summary>
    /// Per tier, the nodes its load needed at each evaluation of the last cooldown (oldest first): a removal keeps the
    /// most of them, so a dip shorter than the cooldown never takes nodes the load comes back to.
    /// </summary>
    public IReadOnlyDictionary<NodeTier, IReadOnlyList<(DateTimeOffset At, int Nodes)>> Needed { get; init; } = new Dictionary<NodeTier, IReadOnlyList<(DateTimeOffset At, int Nodes)>>();
}

/// <summary>
/// The scaling policy as a pure function: latest samples + settings + clock (+ remembered state) in, one decision
/// out. No I/O, so the same code drives the live controller, unit tests and a simulator. It tracks each tier's load in
/// nodes' worth (the busiest of CPU, network and capacity, as a multiple of one node) and its trend: a tier whose
/// load, now or projected <see cref="AutoscalerOptions.Lead"/> ahead, is above the upper bound gets at once as many
/// nodes as bring it back to the bound; a tier that has held more nodes than its load needs at the upper bound, below
/// the lower bound and not rising, for the cooldown, gives back all the nodes it did not need in that time at once.
/// </summary>
public static class AutoscalerPolicy
{
    private const double Epsilon = 1e-9;

    /// <summary>Utilisation per tier over live nodes (draining, drained and dead nodes do not count).</summary>
    public static IReadOnlyList<TierUtilisation> Utilisation(IReadOnlyList<NodeSample> samples, AutoscalerOptions options, Func<NodeTier, double> bandwidth) =>
        [.. samples
            .Where(s => s.State == NodeState.Live)
            .GroupBy(s => s.Tier)
            .OrderBy(g => g.Key)
            .Select(g =>
            {
                var count = g.Count();
                var capacity = g.Sum(s => (double)s.Capacity);
                var watch = options.Resources;
                return new TierUtilisation(
                    g.Key,
                    count,
                    (watch & ScalingResources.Cpu) != 0 ? g.Average(s => Math.Clamp(s.Cpu, 0, 1)) : 0,
                    (watch & ScalingResources.Network) != 0 ? g.Sum(s => s.NetRxBytesPerSecond + s.NetTxBytesPerSecond) / (count * bandwidth(g.Key)) : 0,
                    (watch & ScalingResources.Capacity) != 0 && capacity > 0 ? g.Sum(s => (double)s.Used) / capacity : 0);
            })];

    /// <summary>
    /// Decides. <paramref name="removable"/> holds the nodes the controller can stop (it started them); nodes only
    /// leave when the tier without them stays at or under the upper bound (otherwise the next evaluation would add
    /// them back), and never below <see cref="AutoscalerOptions.MinNodes"/>.
    /// </summary>
    public static (ScalingDecision Decision, AutoscalerState State) Decide(
        IReadOnlyList<NodeSample> samples,
        IReadOnlySet<uint> removable,
        AutoscalerOptions options,
        Func<NodeTier, double> bandwidth,
        AutoscalerState state,
        DateTimeOffset now)
    {
        var tiers = Utilisation(samples, options, bandwidth);
        var below = new Dictionary<NodeTier, DateTimeOffset>();
        var keep = new Dictionary<NodeTier, int>();
        var windows = new Dictionary<NodeTier, IReadOnlyList<(DateTimeOffset At, int Nodes)>>();
        var loads = new Dictionary<NodeTier, IReadOnlyList<TierLoad>>();
        var expected = new Dictionary<NodeTier, double>();
        foreach (var tier in tiers)
        {
            var need = tier.Need;
            var history = (state.Loads.TryGetValue(tier.Tier, out var before) ? before : [])
                .Where(l => l.At < now && now - l.At <= 2 * options.Lead)
                .Append(new TierLoad(now, need))
                .ToList();
            loads[tier.Tier] = history;
            var rising = Math.Max(0, Slope(history, now));
            expected[tier.Tier] = need + (rising * options.Lead.TotalSeconds);

            // Nodes the expected load needs at the upper bound, over the last cooldown; more than the most of them,
            // while the tier stays below the band, is excess.
            var needed = Math.Max(1, NodesFor(expected[tier.Tier], options.Upper));
            var window = (state.Needed.TryGetValue(tier.Tier, out var earlier) ? earlier : [])
                .Where(n => now - n.At < options.Cooldown)
                .Append((At: now, Nodes: needed))
                .ToList();
            windows[tier.Tier] = window;
            if (tier.Max < options.Lower && window.Max(n => n.Nodes) < tier.Nodes)
            {
                below[tier.Tier] = state.BelowSince.TryGetValue(tier.Tier, out var since) ? since : now;
                keep[tier.Tier] = window.Max(n => n.Nodes);
            }
        }

        var next = state with { BelowSince = below, Needed = windows, Loads = loads };
        var live = samples.Count(s => s.State == NodeState.Live);
        foreach (var tier in tiers.OrderByDescending(t => Math.Max(t.Max, expected[t.Tier] / t.Nodes)))
        {
            var load = Math.Max(tier.Need, expected[tier.Tier]);
            // A saturated resource cannot show how far demand exceeds it: at 100 % a node is added whatever the bound.
            if ((load > options.Upper * tier.Nodes * (1 + Epsilon) || tier.Max >= 1 - 1e-6) && live < options.MaxNodes)
            {
                var count = Math.Clamp(NodesFor(load, options.Upper) - tier.Nodes, 1, options.MaxNodes - live);
                var reason = tier.Max > options.Upper
                    ? $"{NodeTierNames.Name(tier.Tier)} {Pressure(tier, options.Upper)} above {Percent(options.Upper)}"
                    : string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier.Tier)} load rising: {load:0.##} nodes' worth expected in {options.Lead.TotalSeconds:0.#} s on {tier.Nodes} nodes");
                return (new ScalingDecision(ScalingAction.AddNode, tier.Tier, null, count > 1 ? $"{reason}; {count} nodes" : reason) { Count = count }, next with { LastAction = now, BelowSince = new Dictionary<NodeTier, DateTimeOffset>() });
            }
        }

        // Removals wait the cooldown after any action, and one drain at a time: a drain in progress already shrinks the cluster.
        if ((state.LastAction is { } previous && now - previous < options.Cooldown) || samples.Any(s => s.State == NodeState.Draining) || live <= options.MinNodes)
        {
            return (ScalingDecision.None, next);
        }

        foreach (var tier in tiers.Where(t => below.ContainsKey(t.Tier) && now - below[t.Tier] >= options.Cooldown).OrderBy(t => t.Max))
        {
            var victims = samples
                .Where(s => s.State == NodeState.Live && s.Tier == tier.Tier && removable.Contains(s.NodeId))
                .OrderBy(s => s.Used).ThenBy(s => s.Cpu).ThenBy(s => s.NetRxBytesPerSecond + s.NetTxBytesPerSecond).ThenByDescending(s => s.NodeId)
                .Take(Math.Min(tier.Nodes - keep[tier.Tier], live - options.MinNodes))
                .ToList();

            // What the victims hold moves to the rest: the rest must stay under the upper bound (no flapping).
            while (victims.Count > 0 && !FitsWithout(tier, victims, samples, options))
            {
                victims.RemoveAt(victims.Count - 1);
            }

            if (victims.Count == 0)
            {
                continue;
            }

            var ids = victims.Select(v => v.NodeId).ToList();
            var reason = string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier.Tier)} below {Percent(options.Lower)} for {options.Cooldown.TotalSeconds:0.#} s (cpu {Percent(tier.Cpu)}, network {Percent(tier.Network)}, capacity {Percent(tier.Capacity)}); ")
                + (ids.Count == 1 ? $"node {ids[0]} is the least used" : $"nodes {string.Join(", ", ids)} are the least used; {keep[tier.Tier]} nodes carry the load");
            return (new ScalingDecision(ScalingAction.RemoveNode, tier.Tier, ids[0], reason) { NodeIds = ids }, next with { LastAction = now, BelowSince = new Dictionary<NodeTier, DateTimeOffset>() });
        }

        return (ScalingDecision.None, next);
    }

    /// <summary>
    /// Nodes' worth per second the load rises, at least: the least-squares slope over the window less twice its
    /// standard error, so a noisy but level load does not read as a ramp while a clean ramp counts whole; 0 with fewer
    /// than three samples.
    /// </summary>
    private static double Slope(List<TierLoad> history, DateTimeOffset now)
    {
        if (history.Count < 3)
        {
            return 0;
        }

        var meanX = history.Average(l => (l.At - now).TotalSeconds);
        var meanY = history.Average(l => l.Need);
        double covariance = 0, variance = 0;
        foreach (var l in history)
        {
            var x = (l.At - now).TotalSeconds - meanX;
            covariance += x * (l.Need - meanY);
            variance += x * x;
        }

        if (variance <= 0)
        {
            return 0;
        }

        var slope = covariance / variance;
        var residuals = history.Sum(l =>
        {
            var fitted = meanY + (slope * ((l.At - now).TotalSeconds - meanX));
            return (l.Need - fitted) * (l.Need - fitted);
        });
        var standardError = Math.Sqrt(residuals / (history.Count - 2) / variance);
        return slope - (2 * standardError);
    }

    /// <summary>The fewest nodes that carry <paramref name="need"/> nodes' worth at <paramref name="bound"/> each.</summary>
    private static int NodesFor(double need, double bound) => (int)Math.Min(int.MaxValue, Math.Ceiling((need / bound) - 1e-6));

    private static bool FitsWithout(TierUtilisation tier, List<NodeSample> victims, IReadOnlyList<NodeSample> samples, AutoscalerOptions options)
    {
        var gone = victims.Select(v => v.NodeId).ToHashSet();
        var rest = samples.Where(s => s.State == NodeState.Live && s.Tier == tier.Tier && !gone.Contains(s.NodeId)).ToList();
        if (rest.Count == 0)
        {
            return false;
        }

        var restCapacity = rest.Sum(s => (double)s.Capacity);
        var afterCapacity = (options.Resources & ScalingResources.Capacity) == 0 ? 0 : samples.Where(s => s.State == NodeState.Live && s.Tier == tier.Tier).Sum(s => (double)s.Used) / restCapacity;
        var afterNetwork = tier.Network * tier.Nodes / rest.Count;
        var afterCpu = tier.Cpu * tier.Nodes / rest.Count;
        return Math.Max(afterCapacity, Math.Max(afterNetwork, afterCpu)) <= options.Upper;
    }

    private static string Pressure(TierUtilisation tier, double upper)
    {
        var over = new List<string>();
        if (tier.Cpu > upper)
        {
            over.Add($"cpu {Percent(tier.Cpu)}");
        }

        if (tier.Network > upper)
        {
            over.Add($"network {Percent(tier.Network)}");
        }

        if (tier.Capacity > upper)
        {
            over.Add($"capacity {Percent(tier.Capacity)}");
        }

        return string.Join(", ", over);
    }

    private static string Percent(double fraction) => string.Create(CultureInfo.InvariantCulture, $"{fraction * 100:0.#} %");
}

/// <summary>
/// Carries out the policy's decisions on a live cluster after each telemetry sample: adds nodes through the
/// provisioner; removes one by taking it out of every job's weight map, draining it (its blocks move while
/// readers keep reading) and stopping it once drained. Every decision and its outcome is an event.
/// </summary>
public sealed class Autoscaler
{
    private readonly PocketClient _admin;
    private readonly JobRegistry _registry;
    private readonly IStorageProvisioner _provisioner;
    private readonly AutoscalerOptions _options;
    private readonly SizingOptions _sizing;
    private readonly TimeProvider _time;
    private readonly ClusterEventLog _events;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, ProvisionedNode> _started = [];
    private AutoscalerState _state = AutoscalerState.Initial;
    private Task _action = Task.CompletedTask;

    internal Autoscaler(PocketClient admin, JobRegistry registry, IStorageProvisioner provisioner, AutoscalerOptions options, SizingOptions sizing, TimeProvider time, ClusterEventLog events, ILogger logger)
    {
        options.Validate();
        _admin = admin;
        _registry = registry;
        _provisioner = provisioner;
        _options = options;
        _sizing = sizing;
        _time = time;
        _events = events;
        _logger = logger;
    }

    /// <summary>Where scale-ups take a node from first, when the controller has a warm pool.</summary>
    internal WarmPool? WarmPool { get; init; }

    /// <summary>The settings in use.</summary>
    public AutoscalerOptions Options => _options;

    /// <summary>Network bandwidth of one node of <paramref name="tier"/>, bytes/s.</summary>
    public double Bandwidth(NodeTier tier) =>
        _options.NodeBandwidthBytesPerSecond.TryGetValue(tier, out var b) ? b : (_sizing.ClassOf(tier)?.BandwidthBitsPerSecond ?? 8e9) / 8;

    /// <summary>Lets the autoscaler remove a node it did not start (the provisioner must be able to stop it).</summary>
    public void Adopt(ProvisionedNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.NodeId is { } id)
        {
            lock (_lock)
            {
                _started[id] = node;
            }
        }
    }

    /// <summary>The action in progress (completed when idle).</summary>
    internal Task Current
    {
        get
        {
            lock (_lock)
            {
                return _action;
            }
        }
    }

    internal Task OnSampleAsync(IReadOnlyList<NodeSample> samples, CancellationToken cancellationToken)
    {
        ScalingDecision decision;
        lock (_lock)
        {
            // One action at a time; the cooldown runs from its end as well as its start. (Simulation/ClusterSimulator mirrors this loop.)
            if (!_action.IsCompleted)
            {
                return Task.CompletedTask;
            }

            var now = _time.GetUtcNow();
            (decision, _state) = AutoscalerPolicy.Decide(samples, _started.Keys.ToHashSet(), _options, Bandwidth, _state, now);
            if (decision.Action == ScalingAction.None)
            {
                return Task.CompletedTask;
            }

            _action = Task.Run(() => ActAsync(decision, cancellationToken), CancellationToken.None);
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// Adds a node of <paramref name="tier"/> now, as a scale-up decision would (from the warm pool when it has one,
    /// unless <paramref name="useWarmPool"/> is false), and returns it once the metadata server lists it live. Runs
    /// as the autoscaler's one action: it waits for an action in progress.
    /// </summary>
    public Task<ProvisionedNode> ScaleUpAsync(NodeTier tier, string reason, bool useWarmPool = true, CancellationToken cancellationToken = default) =>
        RunExclusiveAsync(() => AddAsync(new ScalingDecision(ScalingAction.AddNode, tier, null, reason), useWarmPool, cancellationToken));

    /// <summary>
    /// Drains <paramref name="nodeId"/> (its blocks move while readers keep reading), stops it and returns the bytes
    /// moved. The node must be one the autoscaler may stop (it started or adopted it). Runs as the autoscaler's one action,
    /// so concurrent removals of one node run one after the other: the later ones find it gone and return 0.
    /// </summary>
    /// <exception cref="ArgumentException">The autoscaler cannot stop that node.</exception>
    public Task<long> RemoveNodeAsync(uint nodeId, string reason, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            if (!_started.ContainsKey(nodeId))
            {
                throw new ArgumentException($"node {nodeId} was not started or adopted by the autoscaler", nameof(nodeId));
            }
        }

        return RunExclusiveAsync(() => RemoveAsync(new ScalingDecision(ScalingAction.RemoveNode, NodeTier.Dram, nodeId, reason), cancellationToken));
    }

    private async Task<T> RunExclusiveAsync<T>(Func<Task<T>> action)
    {
        while (true)
        {
            Task previous;
            Task<T>? started = null;
            lock (_lock)
            {
                previous = _action;
                if (previous.IsCompleted)
                {
                    // Run, not called inline: the action must not start under the lock.
                    started = Task.Run(action, CancellationToken.None);
                    _action = started;
                }
            }

            if (started is not null)
            {
                try
                {
                    return await started.ConfigureAwait(false);
                }
                finally
                {
                    lock (_lock)
                    {
                        _state = _state with { LastAction = _time.GetUtcNow() };
                    }
                }
            }

            await previous.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task ActAsync(ScalingDecision decision, CancellationToken cancellationToken)
    {
        try
        {
            if (decision.Action == ScalingAction.AddNode)
            {
                // Started together: the load they are for is expected by the time one node starts.
                var adds = Enumerable.Range(0, Math.Max(1, decision.Count))
                    .Select(i => AddAsync(i == 0 ? decision : decision with { Reason = $"{decision.Reason} ({i + 1} of {decision.Count})" }, useWarmPool: true, cancellationToken))
                    .ToList();
                await Task.WhenAll(adds).ConfigureAwait(false);
            }
            else
            {
                // One drain after the other: a node being drained must not be the target of another's blocks.
                foreach (var id in decision.NodeIds.Count > 0 ? decision.NodeIds : [decision.NodeId!.Value])
                {
                    await RemoveAsync(decision with { NodeId = id }, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Event("scale-failed", decision.NodeId, $"{decision.Action} ({decision.Reason}) failed: {ex.Message}");
        }
        catch (OperationCanceledException)
        {
            // The controller is stopping.
        }
        finally
        {
            lock (_lock)
            {
                _state = _state with { LastAction = _time.GetUtcNow() };
            }
        }
    }

    private async Task<ProvisionedNode> AddAsync(ScalingDecision decision, bool useWarmPool, CancellationToken cancellationToken)
    {
        Event("scale-up", null, decision.Reason);
        var tier = NodeTierNames.Name(decision.Tier);
        if (useWarmPool && WarmPool is { } pool && await pool.TryClaimAsync(decision.Tier, cancellationToken).ConfigureAwait(false) is { } pooled)
        {
            Track(pooled);
            Event("node-started", pooled.NodeId, $"{tier} node {pooled.Handle} at {pooled.Address ?? "pending"}, taken from the warm pool{await SpreadAsync(pooled, cancellationToken).ConfigureAwait(false)}");
            return pooled;
        }

        var capacity = _options.NewNodeCapacityBytes ?? _sizing.ClassOf(decision.Tier)?.CapacityBytes
            ?? throw new ProvisioningException($"no node class for tier {decision.Tier}");
        var node = await _provisioner.StartNodeAsync(new NodeRequest(decision.Tier, capacity), cancellationToken).ConfigureAwait(false);
        Track(node);
        Event("node-started", node.NodeId, $"{tier} node {node.Handle} at {node.Address ?? "pending"}{await SpreadAsync(node, cancellationToken).ConfigureAwait(false)}");
        return node;
    }

    /// <summary>Running jobs of the node's tier take the new node too (their new blocks); the event says how many.</summary>
    private async Task<string> SpreadAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        if (node.NodeId is not { } id)
        {
            // A node whose id is not known yet (a pod still registering) is taken by jobs registered after it.
            return "";
        }

        var jobs = await _registry.SpreadOverNodeAsync(id, node.Tier, cancellationToken).ConfigureAwait(false);
        return jobs == 0 ? "" : $"; {jobs} running job(s) now place new blocks on it";
    }

    private void Track(ProvisionedNode node)
    {
        if (node.NodeId is { } id)
        {
            lock (_lock)
            {
                _started[id] = node;
            }
        }
    }

    private async Task<long> RemoveAsync(ScalingDecision decision, CancellationToken cancellationToken)
    {
        var id = decision.NodeId!.Value;
        ProvisionedNode? node;
        lock (_lock)
        {
            // Checked again inside the one action: a removal that ran before this one (a concurrent call, or the
            // policy's own) may have stopped the node since the caller checked.
            if (!_started.TryGetValue(id, out node))
            {
                return 0;
            }
        }

        Event("scale-down", id, decision.Reason);

        // Out of every job first (weight map, shares, allocation), so nothing new is planned onto the node and no job
        // lists it once it is gone; the drain then refuses new blocks anyway.
        await _registry.ExcludeNodesAsync(new HashSet<uint> { id }, cancellationToken).ConfigureAwait(false);

        await _admin.DrainNodeAsync(id, cancellationToken).ConfigureAwait(false);
        using var deadline = new CancellationTokenSource(_options.DrainTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        NodeInfo? info;
        while (true)
        {
            info = (await _admin.GetNodesAsync(linked.Token).ConfigureAwait(false)).SingleOrDefault(n => n.Id == id);
            if (info is null || info.State is NodeState.Drained or NodeState.Dead)
            {
                break;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), _time, linked.Token).ConfigureAwait(false);
        }

        if (info?.State == NodeState.Dead)
        {
            Event("scale-failed", id, $"node {id} died while draining; objects not yet moved are lost");
        }
        else
        {
            Event("node-drained", id, string.Create(CultureInfo.InvariantCulture, $"{info?.MovedBytes ?? 0} bytes moved to other nodes"));
        }

        await _provisioner.StopNodeAsync(node, cancellationToken).ConfigureAwait(false);
        lock (_lock)
        {
            _started.Remove(id);
        }

        Event("node-stopped", id, $"node {node.Handle} stopped after its drain");
        return info?.MovedBytes ?? 0;
    }

    private void Event(string kind, uint? node, string reason)
    {
        ControllerLog.ScalingEvent(_logger, kind, node?.ToString(CultureInfo.InvariantCulture) ?? "-", reason);
        _events.Add(new ClusterEvent(_time.GetUtcNow(), kind, node, reason));
    }
}
