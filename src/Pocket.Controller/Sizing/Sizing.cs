using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Sizing;

/// <summary>
/// A job's needs on one tier: throughput T and capacity C from its hints, and how many nodes of the tier's class
/// they take. <see cref="NodesNeeded"/> counts whole nodes of the class (at least the minimum); a job laid over
/// partly used nodes may touch more.
/// </summary>
public sealed record JobRequirement(
    NodeTier Tier,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesForThroughput,
    int NodesForCapacity,
    int NodesNeeded,
    bool ThroughputBound,
    double CostPerHour,
    NodeClassOptions NodeClass)
{
    /// <summary>
    /// True for a job registered without hints: it is sized as <see cref="SizingOptions.DefaultFunctions"/> functions
    /// and placed on running nodes only, even past their room (<see cref="JobSizer.Place"/>); nodes are started for it
    /// only when its tier has none at all.
    /// </summary>
    public bool IsDefault { get; init; }
}

/// <summary>A running node as sizing sees it: its registered capacity and what jobs already hold of it.</summary>
public readonly record struct NodeLoad(uint NodeId, NodeTier Tier, long CapacityBytes, double AllocatedBitsPerSecond, double AllocatedBytes);

/// <summary>A job's slice of one node: the fraction of the job's data, and the bandwidth and bytes that reserves.</summary>
public sealed record NodeShare(uint NodeId, double Fraction, double BitsPerSecond, double Bytes);

/// <summary>
/// Where a job goes: slices of running nodes, fullest first, and how many nodes of the class must still be started
/// for the rest. Complete (a weight map can be made) only when <see cref="NewNodes"/> is 0.
/// </summary>
public sealed record Placement(IReadOnlyList<NodeShare> Shares, int NewNodes)
{
    /// <summary>True when running nodes hold the whole job.</summary>
    public bool IsComplete => NewNodes == 0;
}

/// <summary>Node id -> fraction of a job's new blocks the node receives; fractions are >= 0 and sum to 1.</summary>
public sealed class WeightMap
{
    private readonly Dictionary<uint, double> _weights;

    /// <summary>Makes a map from raw weights, scaled to sum to 1. Nodes with weight 0 are left out.</summary>
    public WeightMap(IEnumerable<KeyValuePair<uint, double>> weights)
    {
        _weights = [];
        foreach (var (node, weight) in weights)
        {
            if (!(weight >= 0) || !double.IsFinite(weight))
            {
                throw new ArgumentException($"weight of node {node} must be a finite number >= 0", nameof(weights));
            }

            if (weight > 0)
            {
                _weights[node] = _weights.GetValueOrDefault(node) + weight;
            }
        }

        var total = _weights.Values.Sum();
        if (_weights.Count == 0 || total <= 0)
        {
            throw new ArgumentException("a weight map needs at least one node with a positive weight", nameof(weights));
        }

        foreach (var node in _weights.Keys.ToList())
        {
            _weights[node] /= total;
        }
    }

    private WeightMap() => _weights = [];

    /// <summary>
    /// No weights: the metadata server spreads the job over its tier's live nodes. What a job is left with when every
    /// node of its map was removed.
    /// </summary>
    public static WeightMap None { get; } = new();

    /// <summary>The weights, summing to 1 (empty for <see cref="None"/>).</summary>
    public IReadOnlyDictionary<uint, double> Weights => _weights;

    /// <summary>This map without <paramref name="nodes"/>, the rest scaled to sum to 1 again; <see cref="None"/> when nothing is left.</summary>
    public WeightMap Without(IReadOnlySet<uint> nodes)
    {
        var rest = _weights.Where(w => !nodes.Contains(w.Key)).ToList();
        return rest.Count == 0 ? None : new WeightMap(rest);
    }

    /// <summary>
    /// This map with <paramref name="node"/> added at the average weight of the others (a uniform map stays uniform:
    /// n nodes at 1/n become n+1 at 1/(n+1)); <see cref="None"/> and maps that already hold the node are returned as they are.
    /// </summary>
    public WeightMap With(uint node)
    {
        if (_weights.Count == 0 || _weights.ContainsKey(node))
        {
            return this;
        }

        return new WeightMap(_weights.Append(new KeyValuePair<uint, double>(node, 1.0 / _weights.Count)));
    }

    /// <summary>The weight map of a complete placement.</summary>
    public static WeightMap From(Placement placement)
    {
        if (!placement.IsComplete)
        {
            throw new InvalidOperationException($"placement still needs {placement.NewNodes} new nodes");
        }

        return new WeightMap(placement.Shares.Select(s => KeyValuePair.Create(s.NodeId, s.Fraction)));
    }
}

/// <summary>A job cannot be sized within the configured limits (too large, or no tier fits).</summary>
public sealed class SizingException(string message) : Exception(message);

/// <summary>
/// The sizing rules of the paper, as pure functions: hints -> tier, throughput and capacity -> nodes needed ->
/// slices of running nodes (fullest first) plus nodes to start. No I/O and no clock: the registry feeds it a
/// snapshot and acts on the answer.
/// </summary>
public sealed class JobSizer
{
    // Fractions are sums of doubles; anything this close to a boundary counts as on it.
    private const double Epsilon = 1e-9;

    /// <summary>Makes a sizer with validated options.</summary>
    public JobSizer(SizingOptions options)
    {
        options.Validate();
        Options = options;
    }

    /// <summary>The constants in use.</summary>
    public SizingOptions Options { get; }

    /// <summary>
    /// Picks the tier and sizes the job on it. Latency-sensitive jobs get DRAM; others the tier whose nodes needed
    /// cost least per hour among <paramref name="availableTiers"/> (ties go to the faster tier).
    /// </summary>
    /// <exception cref="SizingException">No available tier can hold the job within <see cref="SizingOptions.MaxNodesPerJob"/>.</exception>
    public JobRequirement Size(JobHints hints, IReadOnlyCollection<NodeTier> availableTiers)
    {
        hints.Validate();
        if (hints.LatencySensitive)
        {
            var dram = Options.ClassOf(NodeTier.Dram);
            if (dram is null || !availableTiers.Contains(NodeTier.Dram))
            {
                throw new SizingException("a latency-sensitive job needs DRAM, and this cluster has no DRAM nodes and cannot start any");
            }

            var requirement = SizeOn(hints, dram);
            return requirement.NodesNeeded <= Options.MaxNodesPerJob
                ? requirement
                : throw TooLarge(requirement);
        }

        JobRequirement? best = null;
        JobRequirement? smallest = null;
        foreach (var tier in availableTiers.Order())
        {
            if (Options.ClassOf(tier) is not { } nodeClass)
            {
                continue;
            }

            var requirement = SizeOn(hints, nodeClass);
            if (smallest is null || requirement.NodesNeeded < smallest.NodesNeeded)
            {
                smallest = requirement;
            }

            if (requirement.NodesNeeded <= Options.MaxNodesPerJob && (best is null || requirement.CostPerHour < best.CostPerHour - Epsilon))
            {
                best = requirement;
            }
        }

        return best ?? throw (smallest is null
            ? new SizingException("no storage tier is available (no node class matches a tier this cluster has or can start)")
            : TooLarge(smallest));
    }

    // Null or 0 is "not given", as in the original API.
    private static bool HasFunctions(JobHints hints) => hints.Functions is > 0;

    private static bool HasThroughput(JobHints hints) => hints.PeakThroughputBitsPerSecond is > 0;

    private static bool HasCapacity(JobHints hints) => hints.CapacityBytes is > 0;

    /// <summary>Sizes the job on one node class (the table in docs/controller.md, "Sizing").</summary>
    public JobRequirement SizeOn(JobHints hints, NodeClassOptions nodeClass)
    {
        hints.Validate();
        var bandwidth = nodeClass.BandwidthBitsPerSecond;

        // Explicit peak throughput beats the function count: it is the more precise statement of the same thing.
        var throughput = HasThroughput(hints) ? hints.PeakThroughputBitsPerSecond!.Value
            : HasFunctions(hints) ? hints.Functions!.Value * Options.PerFunctionBitsPerSecond
            : HasCapacity(hints) ? (double)hints.CapacityBytes!.Value * bandwidth / nodeClass.CapacityBytes
            : Options.DefaultFunctions * Options.PerFunctionBitsPerSecond;
        var isDefault = !HasThroughput(hints) && !HasFunctions(hints) && !HasCapacity(hints);

        // Without a capacity hint the job is assumed to store what its throughput fills on the class's nodes.
        // Multiplied before divided, and rounded up only past float noise, so 2 Gb/s on 256 MiB per 8 Gb/s is 64 MiB exactly.
        var capacity = HasCapacity(hints) ? hints.CapacityBytes!.Value : Math.Ceiling((throughput * nodeClass.CapacityBytes / bandwidth) - 1e-6);

        var byThroughput = throughput / bandwidth;
        var byCapacity = capacity / nodeClass.CapacityBytes;
        var nodesForThroughput = CeilNodes(byThroughput);
        var nodesForCapacity = CeilNodes(byCapacity);
        var nodesNeeded = Math.Max(Math.Max(nodesForThroughput, nodesForCapacity), Options.MinimumNodes);

        // When one side was derived from the other they tie; the side the user actually stated names the bound.
        bool throughputBound;
        if (byThroughput > byCapacity * (1 + Epsilon))
        {
            throughputBound = true;
        }
        else if (byCapacity > byThroughput * (1 + Epsilon))
        {
            throughputBound = false;
        }
        else
        {
            throughputBound = !HasCapacity(hints) && (HasThroughput(hints) || HasFunctions(hints));
        }

        return new JobRequirement(
            nodeClass.Tier,
            throughput,
            (long)Math.Min(capacity, long.MaxValue),
            nodesForThroughput,
            nodesForCapacity,
            nodesNeeded,
            throughputBound,
            nodesNeeded * nodeClass.CostPerHour,
            nodeClass)
        {
            IsDefault = isDefault,
        };
    }

    /// <summary>
    /// The limits the metadata server enforces for a job sized as <paramref name="requirement"/> (docs/controller.md,
    /// "Quotas"): bytes are the sized capacity times <see cref="SizingOptions.QuotaAllowance"/> (a job without hints:
    /// <see cref="SizingOptions.DefaultJobMaxBytes"/>, else one node of its class); objects are those bytes over
    /// <see cref="SizingOptions.BytesPerObject"/>, at least <see cref="SizingOptions.MinObjectsPerJob"/>; key bytes are
    /// <see cref="SizingOptions.KeyBytesPerObject"/> per object. A limit given with the hints wins (0: no limit).
    /// </summary>
    public JobQuota QuotaFor(JobRequirement requirement, JobHints hints)
    {
        var sized = requirement.IsDefault
            ? Options.DefaultJobMaxBytes ?? requirement.NodeClass.CapacityBytes
            : (long)Math.Min(Math.Ceiling(requirement.CapacityBytes * Options.QuotaAllowance), long.MaxValue / 2);
        var bytes = hints.MaxCapacityBytes ?? Math.Max(sized, 1);
        var objectBase = bytes > 0 ? bytes : sized;
        var objects = hints.MaxObjects ?? Math.Max(Options.MinObjectsPerJob, (objectBase + Options.BytesPerObject - 1) / Options.BytesPerObject);
        var keyBytes = hints.MaxKeyBytes
            ?? (objects > 0 && objects <= long.MaxValue / Options.KeyBytesPerObject ? objects * Options.KeyBytesPerObject : 0);
        return new JobQuota(bytes, objects, keyBytes);
    }

    /// <summary>
    /// The fraction of a node already promised to jobs: the larger of its bandwidth share (against the class
    /// bandwidth) and its capacity share (against its registered capacity).
    /// </summary>
    public double ShareOf(NodeLoad node)
    {
        var bandwidth = Options.ClassOf(node.Tier)?.BandwidthBitsPerSecond ?? 0;
        var byBandwidth = bandwidth > 0 ? node.AllocatedBitsPerSecond / bandwidth : 1;
        var byCapacity = node.CapacityBytes > 0 ? node.AllocatedBytes / node.CapacityBytes : 1;
        return Math.Max(byBandwidth, byCapacity);
    }

    /// <summary>
    /// Lays the job over running nodes of its tier, fullest first (so partly used nodes fill up and empty ones
    /// stay free to be removed), no node taking more than 1/<see cref="SizingOptions.MinimumNodes"/> of it; what
    /// does not fit is counted in new nodes of the class. A job without hints (<see cref="JobRequirement.IsDefault"/>) that
    /// does not fit in the room left goes on the least promised running nodes of its tier anyway, over-committing them:
    /// it said nothing about its needs, so it takes no whole node; the autoscaler adds nodes when use grows.
    /// </summary>
    public Placement Place(JobRequirement requirement, IEnumerable<NodeLoad> nodes)
    {
        var throughput = requirement.ThroughputBitsPerSecond;
        var capacity = (double)Math.Max(1, requirement.CapacityBytes);
        var bandwidth = requirement.NodeClass.BandwidthBitsPerSecond;
        var perNodeLimit = 1.0 / Options.MinimumNodes;

        var candidates = nodes
            .Where(n => n.Tier == requirement.Tier)
            .Select(n => (Node: n, Share: ShareOf(n)))
            .Where(n => n.Share < 1 - Epsilon)
            .OrderByDescending(n => n.Share)
            .ThenBy(n => n.Node.NodeId);

        var shares = new List<NodeShare>();
        var remaining = 1.0;
        foreach (var (node, _) in candidates)
        {
            if (remaining <= Epsilon)
            {
                break;
            }

            var room = Math.Min(
                (bandwidth - node.AllocatedBitsPerSecond) / throughput,
                (node.CapacityBytes - node.AllocatedBytes) / capacity);
            var fraction = Math.Min(remaining, Math.Min(perNodeLimit, room));
            if (fraction <= Epsilon)
            {
                continue;
            }

            shares.Add(new NodeShare(node.NodeId, fraction, fraction * throughput, fraction * capacity));
            remaining -= fraction;
        }

        if (remaining > Epsilon && requirement.IsDefault)
        {
            var least = nodes
                .Where(n => n.Tier == requirement.Tier)
                .OrderBy(ShareOf)
                .ThenBy(n => n.NodeId)
                .Take(Options.MinimumNodes)
                .ToList();
            if (least.Count > 0)
            {
                var each = 1.0 / least.Count;
                return new Placement([.. least.Select(n => new NodeShare(n.NodeId, each, each * throughput, each * capacity))], 0);
            }
        }

        var newNodes = 0;
        if (remaining > Epsilon)
        {
            var perNewNode = Math.Min(perNodeLimit, Math.Min(bandwidth / throughput, requirement.NodeClass.CapacityBytes / capacity));
            newNodes = CeilNodes(remaining / perNewNode);
        }

        return new Placement(shares, newNodes);
    }

    private static int CeilNodes(double nodes) => (int)Math.Min(int.MaxValue, Math.Max(0, Math.Ceiling(nodes - Epsilon)));

    private SizingException TooLarge(JobRequirement requirement) => new(
        $"the job needs {requirement.NodesNeeded} {requirement.Tier.Name()} nodes "
        + $"({Units.FormatBitsPerSecond(requirement.ThroughputBitsPerSecond)}, {Units.FormatBytes(requirement.CapacityBytes)}); "
        + $"a job may use at most {Options.MaxNodesPerJob}");
}
