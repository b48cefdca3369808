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
}

/// <summary>Utilisation of one tier's live nodes, each resource as a fraction of what the nodes offer.</summary>
public sealed record TierUtilisation(NodeTier Tier, int Nodes, double Cpu, double Network, double Capacity)
{
    /// <summary>The highest of the three.</summary>
    public double Max => Math.Max(Cpu, Math.Max(Network, Capacity));
}

/// <summary>What the policy remembers between evaluations (it is otherwise a pure function).</summary>
/// <param name="LastAction">When the last action was taken; the cooldown runs from there.</param>
/// <param name="BelowSince">Per tier, since when every resource has been below the lower bound.</param>
public sealed record AutoscalerState(DateTimeOffset? LastAction, IReadOnlyDictionary<NodeTier, DateTimeOffset> BelowSince)
{
    /// <summary>Nothing yet.</summary>
    public static AutoscalerState Initial { get; } = new(null, new Dictionary<NodeTier, DateTimeOffset>());
}

/// <summary>
/// The scaling policy of the paper as a pure function: latest samples + settings + clock (+ remembered state) in,
/// one decision out. No I/O, so the same code drives the live controller, unit tests and a simulator.
/// </summary>
public static class AutoscalerPolicy
{
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
    /// Decides. <paramref name="removable"/> holds the nodes the controller can stop (it started them); a node
    /// only leaves when every resource of its tier has been below the band for the cooldown and the tier, without
    /// it, would still be under the upper bound (otherwise the next evaluation would add a node back).
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
        foreach (var tier in tiers.Where(t => t.Max < options.Lower))
        {
            below[tier.Tier] = state.BelowSince.TryGetValue(tier.Tier, out var since) ? since : now;
        }

        var next = state with { BelowSince = below };
        if (state.LastAction is { } last && now - last < options.Cooldown)
        {
            return (ScalingDecision.None, next);
        }

        var live = samples.Count(s => s.State == NodeState.Live);
        var busy = samples.Any(s => s.State == NodeState.Draining);
        foreach (var tier in tiers.OrderByDescending(t => t.Max))
        {
            if (tier.Max > options.Upper && live < options.MaxNodes)
            {
                return (new ScalingDecision(ScalingAction.AddNode, tier.Tier, null, $"{NodeTierNames.Name(tier.Tier)} {Pressure(tier, options.Upper)} above {Percent(options.Upper)}"), next with { LastAction = now });
            }
        }

        // One removal at a time: a drain in progress already shrinks the cluster.
        if (busy || live <= options.MinNodes)
        {
            return (ScalingDecision.None, next);
        }

        foreach (var tier in tiers.Where(t => below.ContainsKey(t.Tier) && now - below[t.Tier] >= options.Cooldown).OrderBy(t => t.Max))
        {
            var candidates = samples.Where(s => s.State == NodeState.Live && s.Tier == tier.Tier && removable.Contains(s.NodeId)).ToList();
            if (candidates.Count == 0)
            {
                continue;
            }

            var victim = candidates.OrderBy(s => s.Used).ThenBy(s => s.Cpu).ThenBy(s => s.NetRxBytesPerSecond + s.NetTxBytesPerSecond).ThenByDescending(s => s.NodeId).First();
            var rest = samples.Where(s => s.State == NodeState.Live && s.Tier == tier.Tier && s.NodeId != victim.NodeId).ToList();
            var restCapacity = rest.Sum(s => (double)s.Capacity);
            var afterCapacity = (options.Resources & ScalingResources.Capacity) == 0 ? 0 : restCapacity > 0 ? rest.Sum(s => (double)s.Used) / restCapacity + ((double)victim.Used / restCapacity) : 1;
            var afterNetwork = rest.Count > 0 ? (tier.Network * tier.Nodes) / rest.Count : 1;
            var afterCpu = rest.Count > 0 ? (tier.Cpu * tier.Nodes) / rest.Count : 1;
            if (rest.Count == 0 || Math.Max(afterCapacity, Math.Max(afterNetwork, afterCpu)) > options.Upper)
            {
                continue;
            }

            var reason = string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(tier.Tier)} below {Percent(options.Lower)} for {options.Cooldown.TotalSeconds:0.#} s (cpu {Percent(tier.Cpu)}, network {Percent(tier.Network)}, capacity {Percent(tier.Capacity)}); node {victim.NodeId} is the least used");
            return (new ScalingDecision(ScalingAction.RemoveNode, tier.Tier, victim.NodeId, reason), next with { LastAction = now, BelowSince = new Dictionary<NodeTier, DateTimeOffset>() });
        }

        return (ScalingDecision.None, next);
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
