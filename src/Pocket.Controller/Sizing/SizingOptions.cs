using Pocket.Protocol;

namespace Pocket.Controller.Sizing;

/// <summary>
/// What a storage node of one tier looks like, for sizing. Defaults are the paper's AWS node classes
/// (the paper's instance table, docs/controller.md): r4.2xl for DRAM, i3.2xl for NVMe flash, h1.2xl for HDD, at 2018 prices.
/// </summary>
public sealed record NodeClassOptions
{
    /// <summary>The tier this class stores on.</summary>
    public required NodeTier Tier { get; init; }

    /// <summary>Bits per second one node of this class serves. Used for every node of the tier, running or not.</summary>
    public double BandwidthBitsPerSecond { get; init; } = 8e9;

    /// <summary>
    /// Bytes one node of this class stores. Sizing uses it to turn throughput into capacity (and back) and for
    /// nodes still to be started (the provisioner is asked for nodes of this size); a running node counts with
    /// the capacity it registered with the metadata server instead.
    /// </summary>
    public required long CapacityBytes { get; init; }

    /// <summary>Cost of one node per hour, in dollars; the cheapest tier that meets a job's needs wins.</summary>
    public required double CostPerHour { get; init; }

    /// <summary>Capacity per bit/s of bandwidth: how much a job's throughput implies it stores, and the reverse.</summary>
    public double BytesPerBitPerSecond => CapacityBytes / BandwidthBitsPerSecond;

    /// <summary>The paper's DRAM node (r4.2xl): 60 GB, ~8 Gb/s, $0.532/h.</summary>
    public static NodeClassOptions Dram => new() { Tier = NodeTier.Dram, CapacityBytes = 60_000_000_000, CostPerHour = 0.532 };

    /// <summary>The paper's NVMe flash node (i3.2xl), our <c>ssd</c>: ~111 GB usable per 8 Gb/s, $0.624/h.</summary>
    public static NodeClassOptions Ssd => new() { Tier = NodeTier.Ssd, CapacityBytes = 111_000_000_000, CostPerHour = 0.624 };

    /// <summary>
    /// The paper's HDD node (h1.2xl): 2 TB, $0.468/h. Its network does ~8 Gb/s but a disk does ~40 MB/s of random
    /// I/O, and blocks are read at random, so the disk is what a job gets.
    /// </summary>
    public static NodeClassOptions Hdd => new() { Tier = NodeTier.Hdd, CapacityBytes = 2_000_000_000_000, BandwidthBitsPerSecond = 320e6, CostPerHour = 0.468 };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Tier))
        {
            throw new ArgumentException($"node class tier {(int)Tier} is not a known tier");
        }

        if (!(BandwidthBitsPerSecond > 0) || !double.IsFinite(BandwidthBitsPerSecond))
        {
            throw new ArgumentException($"node class {Tier}: bandwidth must be a positive number of bits/s");
        }

        if (CapacityBytes <= 0)
        {
            throw new ArgumentException($"node class {Tier}: capacity must be positive");
        }

        if (!(CostPerHour >= 0) || !double.IsFinite(CostPerHour))
        {
            throw new ArgumentException($"node class {Tier}: cost per hour must be a number >= 0");
        }
    }
}

/// <summary>The constants of the sizing rules (docs/controller.md, "Sizing").</summary>
public sealed record SizingOptions
{
    /// <summary>Bandwidth one function is assumed to use at peak: 600 Mb/s, as measured for Lambda in the paper.</summary>
    public double PerFunctionBitsPerSecond { get; init; } = 600e6;

    /// <summary>
    /// Every job is spread over at least this many nodes (no node holds more than 1/N of a job), so one node's
    /// bandwidth never caps a job and losing one node never loses all of it.
    /// </summary>
    public int MinimumNodes { get; init; } = 2;

    /// <summary>
    /// A job without hints (no functions, throughput or capacity; an S3 bucket made without <c>x-pocket-hints</c>) is
    /// sized as this many functions: 1 by default, 600 Mb/s and the capacity that implies (7.5 % of a node). The paper
    /// sized it as 50 whole nodes and its later code as 2, which on one machine starts two nodes per forgotten hint;
    /// here such a job only takes a small share of the nodes already running (<see cref="JobSizer.Place"/>), never
    /// starts one, and the autoscaler adds nodes when real use needs them.
    /// </summary>
    public int DefaultFunctions { get; init; } = 1;

    /// <summary>
    /// A job may store this much more than it was sized for before puts fail with QuotaExceeded: 1.25 lets a job sized
    /// for 20 MB store 25 MB. Its byte quota is the sized capacity times this (<see cref="JobSizer.QuotaFor"/>).
    /// </summary>
    public double QuotaAllowance { get; init; } = 1.25;

    /// <summary>
    /// Byte quota of a job registered without hints: null (the default) gives it one node of its tier's class, so a
    /// job that said nothing may still fill a node but never the cluster.
    /// </summary>
    public long? DefaultJobMaxBytes { get; init; }

    /// <summary>The object quota is the byte quota over this (the smallest average object a job is sized for): 1 KiB.</summary>
    public long BytesPerObject { get; init; } = 1024;

    /// <summary>Every job may hold at least this many objects, however small its byte quota.</summary>
    public long MinObjectsPerJob { get; init; } = 100_000;

    /// <summary>The key-byte quota is the object quota times this (an average key of 256 UTF-8 bytes).</summary>
    public long KeyBytesPerObject { get; init; } = 256;

    /// <summary>No tier grows beyond this many nodes for one job; a job that would need more is refused, not half-served.</summary>
    public int MaxNodesPerJob { get; init; } = 64;

    /// <summary>The node classes, one per tier. Tiers without a class are never chosen.</summary>
    public IReadOnlyList<NodeClassOptions> NodeClasses { get; init; } = [NodeClassOptions.Dram, NodeClassOptions.Ssd, NodeClassOptions.Hdd];

    /// <summary>The class of <paramref name="tier"/>, or null when none is configured.</summary>
    public NodeClassOptions? ClassOf(NodeTier tier)
    {
        foreach (var nodeClass in NodeClasses)
        {
            if (nodeClass.Tier == tier)
            {
                return nodeClass;
            }
        }

        return null;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!(PerFunctionBitsPerSecond > 0) || !double.IsFinite(PerFunctionBitsPerSecond))
        {
            throw new ArgumentException("per-function bandwidth must be a positive number of bits/s");
        }

        if (MinimumNodes < 1)
        {
            throw new ArgumentException("minimum nodes per job must be at least 1");
        }

        if (DefaultFunctions < 1)
        {
            throw new ArgumentException("default functions must be at least 1");
        }

        if (MaxNodesPerJob < MinimumNodes)
        {
            throw new ArgumentException("max nodes per job must be at least the minimum number of nodes");
        }

        if (!(QuotaAllowance >= 1) || !double.IsFinite(QuotaAllowance))
        {
            throw new ArgumentException("the quota allowance must be a number >= 1");
        }

        if (DefaultJobMaxBytes is <= 0 || BytesPerObject <= 0 || MinObjectsPerJob <= 0 || KeyBytesPerObject <= 0)
        {
            throw new ArgumentException("default job bytes, bytes per object, minimum objects and key bytes per object must be positive");
        }

        if (NodeClasses.Count == 0)
        {
            throw new ArgumentException("at least one node class is needed");
        }

        foreach (var nodeClass in NodeClasses)
        {
            nodeClass.Validate();
        }

        if (NodeClasses.Select(c => c.Tier).Distinct().Count() != NodeClasses.Count)
        {
            throw new ArgumentException("one node class per tier");
        }
    }
}
