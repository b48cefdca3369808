using System.Globalization;
using Pocket.Protocol;

namespace Pocket.Controller.Scaling;

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

/// <summary>
/// A running job as the policy sees it: its tier, when it registered, and what it declared at registration (its hints:
/// peak throughput and bytes; null when it declared none). Declared peaks let the policy act on a job before its data
/// arrives and stop short of nodes the declared load cannot use.
/// </summary>
/// <param name="Tier">The tier its data is placed on.</param>
/// <param name="RegisteredAt">When it registered.</param>
/// <param name="PeakBitsPerSecond">Its declared peak throughput (rx + tx), bits/s; null: not declared.</param>
/// <param name="CapacityBytes">Its declared most bytes stored at once; null: not declared.</param>
public readonly record struct RegisteredJob(NodeTier Tier, DateTimeOffset RegisteredAt, double? PeakBitsPerSecond, long? CapacityBytes);

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

    /// <summary>How many evaluations in a row a load must rise (or fall) to count as a steady trend.</summary>
    private const int SteadySamples = 3;

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
    /// them back), and never below <see cref="AutoscalerOptions.MinNodes"/>. <paramref name="jobs"/> are the running
    /// jobs with what they declared at registration (null: not known, the samples alone decide): registrations whose
    /// declared load would leave the tier short add a node before the load shows; a tier whose jobs all declared their
    /// peaks, and keep within them, gets no more nodes than the peaks fill at 100 % and, after the quiet period, gives
    /// back the rest in one action (a tier with no job left: every node it does not need).
    /// </summary>
    public static (ScalingDecision Decision, AutoscalerState State) Decide(
        IReadOnlyList<NodeSample> samples,
        IReadOnlySet<uint> removable,
        AutoscalerOptions options,
        Func<NodeTier, double> bandwidth,
        AutoscalerState state,
        DateTimeOffset now,
        IReadOnlyList<RegisteredJob>? jobs = null)
    {
        var tiers = Utilisation(samples, options, bandwidth);
        var declared = tiers.ToDictionary(t => t.Tier, t => jobs is null ? (0, 0, null) : Declare(t, jobs, samples, options, bandwidth, now));
        var below = new Dictionary<NodeTier, DateTimeOffset>();
        var keep = new Dictionary<NodeTier, int>();
        var windows = new Dictionary<NodeTier, IReadOnlyList<(DateTimeOffset At, int Nodes)>>();
        var loads = new Dictionary<NodeTier, IReadOnlyList<TierLoad>>();
        var expected = new Dictionary<NodeTier, double>();
        var falling = new Dictionary<NodeTier, bool>();
        var arrivals = new Dictionary<NodeTier, double>();
        foreach (var tier in tiers)
        {
            var need = tier.Need;
            var history = (state.Loads.TryGetValue(tier.Tier, out var before) ? before : [])
                .Where(l => l.At < now && now - l.At <= 2 * options.Lead)
                .Append(new TierLoad(now, need))
                .ToList();
            loads[tier.Tier] = history;
            var (steadyRise, steadyFall) = Steady(history);
            var rising = Math.Max(0, Math.Max(Slope(history, now), steadyRise));
            var hinted = declared[tier.Tier];
            // Jobs that registered within the lead bring their declared load before it shows in the samples: a stream
            // of registrations is a rise the trend sees only once the data arrives, a start delay too late.
            var arriving = need + hinted.Recent;
            expected[tier.Tier] = need + (rising * options.Lead.TotalSeconds);
            // With every job declared, the load cannot pass the declared peaks, plus as many again as the last lead's
            // registrations if they keep coming at that rate for another lead (about a node's start).
            arrivals[tier.Tier] = hinted.Ceiling is not null ? Math.Min(arriving, Math.Max(need, hinted.Worth + hinted.Recent)) : arriving;
            falling[tier.Tier] = steadyFall < 0;

            // Nodes the expected load needs at the upper bound, over the last cooldown; more than the most of them,
            // while the tier stays below the band, is excess.
            var needed = Math.Max(1, NodesFor(expected[tier.Tier], options.Upper));
            var window = (state.Needed.TryGetValue(tier.Tier, out var earlier) ? earlier : [])
                .Where(n => now - n.At < options.Cooldown)
                .Append((At: now, Nodes: needed))
                .ToList();
            windows[tier.Tier] = window;
            // A load that has fallen at every one of the last samples is leaving: what it needs now is what to keep,
            // at once (a dip inside a level load does not fall three times in a row, and a ramp down does).
            var keepNodes = falling[tier.Tier] ? needed : window.Max(n => n.Nodes);
            if (declared[tier.Tier].Ceiling is not null)
            {
                // The declared load never needs more than it fills at the upper bound, whatever a recent peak of the
                // samples asked; not less either, since it may come back at full at any moment (the samples of a
                // live cluster lag and under-read it, measured: a removal down to the 100 % ceiling left it at 126 %).
                keepNodes = Math.Min(keepNodes, Math.Max(1, NodesFor(declared[tier.Tier].Worth, options.Upper)));
            }

            if (tier.Max < options.Lower && keepNodes < tier.Nodes)
            {
                below[tier.Tier] = falling[tier.Tier] ? now - options.Cooldown : state.BelowSince.TryGetValue(tier.Tier, out var since) ? since : now;
                keep[tier.Tier] = keepNodes;
            }
        }

        var next = state with { BelowSince = below, Needed = windows, Loads = loads };
        var live = samples.Count(s => s.State == NodeState.Live);
        foreach (var tier in tiers.OrderByDescending(t => Math.Max(t.Max, expected[t.Tier] / t.Nodes)))
        {
            var load = Math.Max(tier.Need, expected[tier.Tier]);
            // Above the bound now, nodes are added; a load only projected to rise is acted on when the projection would
            // leave the tier short (past 100 %), not merely past the bound: a ramp that ends before it gets there would
            // leave a node nobody needed. A saturated resource cannot show how far demand exceeds it: at 100 % a node is
            // added whatever the bound.
            var over = tier.Need > options.Upper * tier.Nodes * (1 + Epsilon) || expected[tier.Tier] > tier.Nodes * (1 + Epsilon);
            // Registrations whose declared load would leave the tier short once it arrives add a node now, one per
            // action: how fast a registered job's load arrives is not declared, so the samples size the rest.
            var arriving = !over && arrivals[tier.Tier] > tier.Nodes * (1 + Epsilon);
            // Jobs that declared their peaks and keep within them never use more nodes than the peaks fill: past that
            // the band's margin would buy nothing but idle nodes.
            var target = arriving ? tier.Nodes + 1 : Math.Min(NodesFor(load, options.Upper), declared[tier.Tier].Ceiling ?? int.MaxValue);
            if ((over || arriving || tier.Max >= 1 - 1e-6) && target > tier.Nodes && live < options.MaxNodes)
            {
                var count = Math.Clamp(target - tier.Nodes, 1, options.MaxNodes - live);
                var reason = tier.Max > options.Upper
                    ? $"{NodeTierNames.Name(tier.Tier)} {Pressure(tier, options.Upper)} above {Percent(options.Upper)}"
                    : arriving
                    ? string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier.Tier)} jobs registered in the last {options.Lead.TotalSeconds:0.#} s declared {arrivals[tier.Tier]:0.##} nodes' worth with the load on {tier.Nodes} nodes")
                    : string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier.Tier)} load rising: {load:0.##} nodes' worth expected in {options.Lead.TotalSeconds:0.#} s on {tier.Nodes} nodes");
                return (new ScalingDecision(ScalingAction.AddNode, tier.Tier, null, count > 1 ? $"{reason}; {count} nodes" : reason) { Count = count }, next with { LastAction = now, BelowSince = new Dictionary<NodeTier, DateTimeOffset>() });
            }
        }

        // Removals wait the cooldown after any action, and one drain at a time: a drain in progress already shrinks the cluster.
        var leaving = tiers.Any(t => falling[t.Tier] && below.ContainsKey(t.Tier));
        if ((state.LastAction is { } previous && now - previous < options.Cooldown && !leaving) || samples.Any(s => s.State == NodeState.Draining) || live <= options.MinNodes)
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

            // What the victims hold moves to the rest: the rest must stay under the upper bound (no flapping), and a
            // new job's ramp finds that margin free.
            while (victims.Count > 0 && !FitsWithout(tier, victims, samples, options, options.Upper))
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

    /// <summary>
    /// The load's steady trend over the last <see cref="SteadySamples"/> evaluations: the smallest rise per second when it
    /// rose at each of them (else 0), and the smallest fall (a negative number) when it fell at each of them (else 0).
    /// A ramp shows at once here, before a least-squares fit over the whole window (<see cref="Slope"/>) clears its noise
    /// bound; noise, which goes both ways, does not.
    /// </summary>
    private static (double Rise, double Fall) Steady(List<TierLoad> history)
    {
        if (history.Count <= SteadySamples)
        {
            return (0, 0);
        }

        double minRise = double.MaxValue, minFall = double.MaxValue;
        for (var i = history.Count - SteadySamples; i < history.Count; i++)
        {
            var seconds = (history[i].At - history[i - 1].At).TotalSeconds;
            if (seconds <= 0)
            {
                return (0, 0);
            }

            var perSecond = (history[i].Need - history[i - 1].Need) / seconds;
            minRise = Math.Min(minRise, perSecond);
            minFall = Math.Min(minFall, -perSecond);
        }

        return (Math.Max(0, minRise), -Math.Max(0, minFall));
    }

    /// <summary>
    /// What the running jobs of <paramref name="tier"/> declared, in nodes' worth (the busier of throughput against node
    /// bandwidth and bytes against node capacity, over the watched resources). <c>Ceiling</c>: the nodes the declared
    /// peaks fill at 100 %, given only when every job of the tier declared its peak throughput and the samples keep
    /// within the declaration (a job that declared less than it uses, or no declaration at all, leaves the band alone).
    /// <c>Recent</c>: what the jobs registered within the lead declared, a load on its way.
    /// </summary>
    private static (double Worth, double Recent, int? Ceiling) Declare(TierUtilisation tier, IReadOnlyList<RegisteredJob> jobs, IReadOnlyList<NodeSample> samples, AutoscalerOptions options, Func<NodeTier, double> bandwidth, DateTimeOffset now)
    {
        // No job at all declares nothing: a tier nobody uses needs no more than the minimum.
        var mine = jobs.Where(j => j.Tier == tier.Tier).ToList();
        var live = samples.Where(s => s.State == NodeState.Live && s.Tier == tier.Tier).ToList();
        var nodeCapacity = live.Count > 0 ? live.Average(s => (double)s.Capacity) : 0;
        double Worth(IEnumerable<RegisteredJob> some)
        {
            var list = some.ToList();
            var network = (options.Resources & (ScalingResources.Network | ScalingResources.Cpu)) != 0 ? list.Sum(j => j.PeakBitsPerSecond ?? 0) / 8 / bandwidth(tier.Tier) : 0;
            var capacity = (options.Resources & ScalingResources.Capacity) != 0 && nodeCapacity > 0 ? list.Sum(j => (double)(j.CapacityBytes ?? 0)) / nodeCapacity : 0;
            return Math.Max(network, capacity);
        }

        var worth = Worth(mine);
        var recent = Worth(mine.Where(j => j.RegisteredAt <= now && now - j.RegisteredAt < options.Lead));
        var complete = mine.All(j => j.PeakBitsPerSecond is not null);
        int? ceiling = complete && tier.Need <= (worth * (1 + 1e-6)) + Epsilon ? NodesFor(worth, 1.0) : null;
        return (worth, recent, ceiling);
    }

    /// <summary>The fewest nodes that carry <paramref name="need"/> nodes' worth at <paramref name="bound"/> each.</summary>
    private static int NodesFor(double need, double bound) => (int)Math.Min(int.MaxValue, Math.Ceiling((need / bound) - 1e-6));

    private static bool FitsWithout(TierUtilisation tier, List<NodeSample> victims, IReadOnlyList<NodeSample> samples, AutoscalerOptions options, double bound)
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
        return Math.Max(afterCapacity, Math.Max(afterNetwork, afterCpu)) <= bound + Epsilon;
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
