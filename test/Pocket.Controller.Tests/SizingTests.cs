using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The sizing rules (docs/controller.md) with the paper's node classes (DRAM 60 GB, SSD 111 GB, HDD 2 TB; 8 Gb/s).</summary>
public sealed class SizingTests
{
    private const double Gbps = 1e9;
    private const long GB = 1_000_000_000;
    private static readonly NodeTier[] AllTiers = [NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd];

    private static readonly JobSizer Paper = new(new SizingOptions());

    /// <summary>Every hint combination on the DRAM class: T, C, nodes for each, nodes needed, and the bound.</summary>
    [Theory]
    //          functions peak(Gb/s) capacity(GB) | T(Gb/s)  C(GB)  nodesT nodesC needed throughputBound
    [InlineData(null, null, null, 0.6, 4.5, 1, 1, 2, false)] // none: sized as one function, a small share (placed on running nodes only)
    [InlineData(100, null, null, 60.0, 450.0, 8, 8, 8, true)] // N functions: N x 0.6 Gb/s, C by the node's ratio
    [InlineData(1, null, null, 0.6, 4.5, 1, 1, 2, true)] // tiny job: the minimum of 2 nodes applies
    [InlineData(null, null, 300L, 40.0, 300.0, 5, 5, 5, false)] // capacity D: T = D / node capacity x 8 Gb/s
    [InlineData(null, 20.0, null, 20.0, 150.0, 3, 3, 3, true)] // peak B: C = B / 8 Gb/s x node capacity
    [InlineData(10, null, 600L, 6.0, 600.0, 1, 10, 10, false)] // functions + capacity: capacity-bound
    [InlineData(null, 40.0, 60L, 40.0, 60.0, 5, 1, 5, true)] // peak + capacity: throughput-bound
    [InlineData(100, 8.0, null, 8.0, 60.0, 1, 1, 2, true)] // peak beats the function count
    [InlineData(10, 16.0, 30L, 16.0, 30.0, 2, 1, 2, true)] // all three
    [InlineData(0, 0.0, 0L, 0.6, 4.5, 1, 1, 2, false)] // zeros mean "not given", as in the original API
    public void SizesEveryHintCombination(int? functions, double? peakGbps, long? capacityGB, double t, double c, int nodesT, int nodesC, int needed, bool throughputBound)
    {
        var hints = new JobHints
        {
            Functions = functions,
            PeakThroughputBitsPerSecond = peakGbps * Gbps,
            CapacityBytes = capacityGB * GB,
        };

        var requirement = Paper.Size(hints, AllTiers);

        Assert.Equal(NodeTier.Dram, requirement.Tier);
        Assert.Equal(t * Gbps, requirement.ThroughputBitsPerSecond, 1e-3);
        Assert.Equal(c * GB, requirement.CapacityBytes, 1.0);
        Assert.Equal(nodesT, requirement.NodesForThroughput);
        Assert.Equal(nodesC, requirement.NodesForCapacity);
        Assert.Equal(needed, requirement.NodesNeeded);
        Assert.Equal(throughputBound, requirement.ThroughputBound);
        Assert.Equal(needed * 0.532, requirement.CostPerHour, 1e-9);
        Assert.Equal(functions is not > 0 && peakGbps is not > 0 && capacityGB is not > 0, requirement.IsDefault);
    }

    [Fact]
    public void AJobWithoutHintsGoesOnTheLeastPromisedRunningNodesEvenWhenTheyAreFullAndNeverNeedsANewOne()
    {
        var sizer = new JobSizer(new SizingOptions());
        var requirement = sizer.Size(JobHints.None, AllTiers);
        var full = new NodeLoad(1, NodeTier.Dram, 60 * GB, 8 * Gbps, 60 * GB);
        var fuller = new NodeLoad(2, NodeTier.Dram, 60 * GB, 8 * Gbps, 70 * GB);
        var half = new NodeLoad(3, NodeTier.Dram, 60 * GB, 4 * Gbps, 30 * GB);

        var placement = sizer.Place(requirement, [full, fuller, half]);

        Assert.True(placement.IsComplete);
        Assert.Equal([1u, 3u], placement.Shares.Select(s => s.NodeId).Order());
        Assert.All(placement.Shares, s => Assert.Equal(0.5, s.Fraction, 9));

        // With no running node of its tier there is nothing to share, and nodes must be started.
        Assert.Equal(2, sizer.Place(requirement, []).NewNodes);

        // A hinted job that does not fit still asks for nodes.
        Assert.False(sizer.Place(sizer.Size(new JobHints { Functions = 1 }, AllTiers), [full, fuller]).IsComplete);
    }

    [Fact]
    public void LatencySensitiveJobsGetDramEvenWhenFlashIsCheaper()
    {
        var hints = new JobHints { Functions = 10, CapacityBytes = 1000 * GB };
        var requirement = Paper.Size(hints, AllTiers);
        Assert.Equal(NodeTier.Dram, requirement.Tier);
        Assert.Equal(17, requirement.NodesNeeded);
    }

    [Fact]
    public void OtherJobsGetTheCheapestTierThatMeetsThroughputAndCapacity()
    {
        // 1 TB at 6 Gb/s: DRAM 17 x $0.532, SSD 10 x $0.624, HDD 19 x $0.468 (its disks, not its network, limit it).
        var bigData = Paper.Size(new JobHints { Functions = 10, CapacityBytes = 1000 * GB, LatencySensitive = false }, AllTiers);
        Assert.Equal(NodeTier.Ssd, bigData.Tier);
        Assert.Equal(10, bigData.NodesNeeded);
        Assert.False(bigData.ThroughputBound);

        // Throughput alone: every tier stores what its nodes hold per 8 Gb/s, so the cheapest 8 Gb/s wins.
        var shuffle = Paper.Size(new JobHints { Functions = 100, LatencySensitive = false }, AllTiers);
        Assert.Equal(NodeTier.Dram, shuffle.Tier);
        Assert.Equal(8, shuffle.NodesNeeded);

        // Capacity alone, a lot of it: the 2 TB disks win.
        var archive = Paper.Size(new JobHints { CapacityBytes = 20_000 * GB, LatencySensitive = false }, AllTiers);
        Assert.Equal(NodeTier.Hdd, archive.Tier);
        Assert.Equal(10, archive.NodesNeeded);
    }

    [Fact]
    public void OnlyAvailableTiersAreChosen()
    {
        var hints = new JobHints { Functions = 10, CapacityBytes = 1000 * GB, LatencySensitive = false };
        Assert.Equal(NodeTier.Dram, Paper.Size(hints, [NodeTier.Dram]).Tier);
        Assert.Equal(NodeTier.Hdd, Paper.Size(hints, [NodeTier.Dram, NodeTier.Hdd]).Tier);
    }

    [Fact]
    public void TiersNeedingMoreThanTheLimitAreSkipped()
    {
        // 100 functions need 188 HDD nodes (320 Mb/s each): over the limit of 64, so DRAM it is.
        var requirement = Paper.Size(new JobHints { Functions = 100, LatencySensitive = false }, [NodeTier.Hdd, NodeTier.Dram]);
        Assert.Equal(NodeTier.Dram, requirement.Tier);
    }

    [Fact]
    public void JobsTooLargeForEveryTierAreRefused()
    {
        var error = Assert.Throws<SizingException>(() => Paper.Size(new JobHints { CapacityBytes = 100_000 * GB }, AllTiers));
        Assert.Contains("1667 dram nodes", error.Message, StringComparison.Ordinal);
        Assert.Contains("at most 64", error.Message, StringComparison.Ordinal);
        Assert.Throws<SizingException>(() => Paper.Size(new JobHints { CapacityBytes = 100_000_000 * GB, LatencySensitive = false }, AllTiers));
    }

    [Fact]
    public void LatencySensitiveJobsFailWithoutDram()
    {
        var error = Assert.Throws<SizingException>(() => Paper.Size(JobHints.None, [NodeTier.Ssd]));
        Assert.Contains("DRAM", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-1, null, null, "functions")]
    [InlineData(null, -1.0, null, "peakThroughput")]
    [InlineData(null, double.NaN, null, "peakThroughput")]
    [InlineData(null, null, -1L, "capacity")]
    public void NegativeHintsAreRejectedByName(int? functions, double? peak, long? capacity, string field)
    {
        var hints = new JobHints { Functions = functions, PeakThroughputBitsPerSecond = peak, CapacityBytes = capacity };
        var error = Assert.Throws<ArgumentException>(() => Paper.Size(hints, AllTiers));
        Assert.Equal(field, error.ParamName);
    }

    [Fact]
    public void OptionsAreValidated()
    {
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { MinimumNodes = 0 }));
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { NodeClasses = [] }));
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { NodeClasses = [NodeClassOptions.Dram, NodeClassOptions.Dram] }));
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = 0 }] }));
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { NodeClasses = [NodeClassOptions.Dram with { BandwidthBitsPerSecond = double.NaN }] }));
        Assert.Throws<ArgumentException>(() => new JobSizer(new SizingOptions { MaxNodesPerJob = 1 }));
    }

    // Placement, on a small node class: 1 GiB and 8 Gb/s per DRAM node.
    private const long GiB = 1L << 30;
    private static readonly JobSizer Small = new(new SizingOptions { NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = GiB }] });

    private static NodeLoad Node(uint id, double share, long capacity = GiB, NodeTier tier = NodeTier.Dram) =>
        new(id, tier, capacity, share * 8 * Gbps, share * capacity);

    [Fact]
    public void EmptyNodesShareAJobEvenly()
    {
        var requirement = Small.Size(new JobHints { CapacityBytes = GiB }, AllTiers);
        var placement = Small.Place(requirement, [Node(1, 0), Node(2, 0), Node(3, 0)]);

        Assert.True(placement.IsComplete);
        Assert.Equal([1u, 2u], placement.Shares.Select(s => s.NodeId));
        Assert.All(placement.Shares, s => Assert.Equal(0.5, s.Fraction, 9));
        Assert.All(placement.Shares, s => Assert.Equal(GiB / 2.0, s.Bytes, 1.0));
        Assert.All(placement.Shares, s => Assert.Equal(4 * Gbps, s.BitsPerSecond, 1.0));
    }

    [Fact]
    public void PartlyUsedNodesAreFilledFullestFirst()
    {
        var requirement = Small.Size(new JobHints { CapacityBytes = GiB }, AllTiers);

        // Node 2 is 75 % promised, node 1 25 %, node 3 empty, node 4 full: 2 takes what it has left (a quarter
        // of the job), 1 takes the per-node maximum (half), the empty node the rest; the full node nothing.
        var placement = Small.Place(requirement, [Node(1, 0.25), Node(2, 0.75), Node(3, 0), Node(4, 1.0)]);

        Assert.True(placement.IsComplete);
        Assert.Equal([2u, 1u, 3u], placement.Shares.Select(s => s.NodeId));
        Assert.Equal([0.25, 0.5, 0.25], placement.Shares.Select(s => Math.Round(s.Fraction, 9)));

        var weights = WeightMap.From(placement);
        Assert.Equal(1.0, weights.Weights.Values.Sum(), 9);
        Assert.False(weights.Weights.ContainsKey(4));
    }

    [Fact]
    public void BandwidthAlreadyPromisedCountsAsMuchAsCapacity()
    {
        var requirement = Small.Size(new JobHints { PeakThroughputBitsPerSecond = 8 * Gbps }, AllTiers);

        // Node 1 has all its bytes free but 6 of its 8 Gb/s promised: it can take 2 Gb/s, a quarter of the job.
        var busy = new NodeLoad(1, NodeTier.Dram, GiB, 6 * Gbps, 0);
        Assert.Equal(0.75, Small.ShareOf(busy), 9);
        var placement = Small.Place(requirement, [busy, Node(2, 0)]);

        Assert.Equal([1u, 2u], placement.Shares.Select(s => s.NodeId));
        Assert.Equal(0.25, placement.Shares[0].Fraction, 9);
        Assert.Equal(0.5, placement.Shares[1].Fraction, 9);
        Assert.Equal(1, placement.NewNodes);
    }

    [Fact]
    public void WhatDoesNotFitIsCountedInNewNodes()
    {
        // 3 GiB on two empty 1 GiB nodes: each takes a third, one more node of the class is needed.
        var requirement = Small.Size(new JobHints { CapacityBytes = 3 * GiB }, AllTiers);
        Assert.Equal(3, requirement.NodesNeeded);
        var placement = Small.Place(requirement, [Node(1, 0), Node(2, 0)]);

        Assert.False(placement.IsComplete);
        Assert.Equal(1, placement.NewNodes);
        Assert.Equal(2.0 / 3, placement.Shares.Sum(s => s.Fraction), 9);
        Assert.Throws<InvalidOperationException>(() => WeightMap.From(placement));

        // No running node at all: the whole job in new nodes, at least the minimum.
        Assert.Equal(3, Small.Place(requirement, []).NewNodes);
        Assert.Equal(2, Small.Place(Small.Size(new JobHints { CapacityBytes = 1024 }, AllTiers), []).NewNodes);
    }

    [Fact]
    public void NodesOfOtherTiersAreNotUsed()
    {
        var requirement = Small.Size(new JobHints { CapacityBytes = GiB }, AllTiers);
        var placement = Small.Place(requirement, [Node(1, 0, tier: NodeTier.Ssd), Node(2, 0)]);
        Assert.Equal([2u], placement.Shares.Select(s => s.NodeId));
        Assert.Equal(1, placement.NewNodes);
    }

    [Fact]
    public void TheMinimumSpreadsEveryJob()
    {
        var one = new JobSizer(new SizingOptions { MinimumNodes = 1, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = GiB }] });
        var requirement = one.Size(new JobHints { CapacityBytes = GiB / 4 }, AllTiers);
        Assert.Equal([1u], one.Place(requirement, [Node(1, 0), Node(2, 0)]).Shares.Select(s => s.NodeId));

        var three = new JobSizer(new SizingOptions { MinimumNodes = 3, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = GiB }] });
        var spread = three.Place(three.Size(new JobHints { CapacityBytes = GiB / 4 }, AllTiers), [Node(1, 0), Node(2, 0), Node(3, 0)]);
        Assert.Equal(3, spread.Shares.Count);
        Assert.All(spread.Shares, s => Assert.Equal(1.0 / 3, s.Fraction, 9));
    }

    [Fact]
    public void RunningNodesCountWithTheirRegisteredCapacity()
    {
        // The class says 60 GB (the paper's r4.2xl), but the running nodes registered 256 MiB each: a 1 GiB job is
        // 2 nodes of the class, yet each running node holds only a quarter of it, so one node must still be started
        // (of the class size, which holds the remaining half within the per-node limit).
        var requirement = Paper.Size(new JobHints { CapacityBytes = GiB }, AllTiers);
        Assert.Equal(2, requirement.NodesNeeded);
        var placement = Paper.Place(requirement, [Node(1, 0, capacity: 256L << 20), Node(2, 0, capacity: 256L << 20)]);

        Assert.All(placement.Shares, s => Assert.Equal(0.25, s.Fraction, 9));
        Assert.Equal(1, placement.NewNodes);

        // Bandwidth comes from the class whatever the node registered.
        Assert.Equal(0.5, Paper.ShareOf(new NodeLoad(1, NodeTier.Dram, 256L << 20, 4 * Gbps, 0)), 9);
        Assert.Equal(0.5, Paper.ShareOf(new NodeLoad(1, NodeTier.Dram, 256L << 20, 0, 128L << 20)), 9);
    }

    [Fact]
    public void WeightMapsSumToOne()
    {
        var map = new WeightMap([KeyValuePair.Create(1u, 3.0), KeyValuePair.Create(2u, 1.0), KeyValuePair.Create(3u, 0.0)]);
        Assert.Equal(0.75, map.Weights[1], 12);
        Assert.Equal(0.25, map.Weights[2], 12);
        Assert.False(map.Weights.ContainsKey(3));
        Assert.Throws<ArgumentException>(() => new WeightMap([]));
        Assert.Throws<ArgumentException>(() => new WeightMap([KeyValuePair.Create(1u, -1.0)]));
        Assert.Throws<ArgumentException>(() => new WeightMap([KeyValuePair.Create(1u, double.PositiveInfinity)]));
    }
}
