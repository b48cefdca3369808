using Pocket.Metadata;
using Pocket.Metadata.Placement;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>Placement and the extent-allocation loop on node and job records alone: no server, no socket.</summary>
public sealed class PlacementTests
{
    private const int Block = 4096;

    private static NodeEntry Node(uint id, NodeTier tier, long blocks) => new()
    {
        Id = id,
        Tier = tier,
        Host = "127.0.0.1",
        Port = 1000 + (int)id,
        RegisteredCapacity = blocks * Block,
        BlockSize = Block,
        Secret = new byte[32],
        Allocator = new BlockAllocator(blocks),
        ConnectionId = id,
    };

    private static JobEntry Job(NodeTier tier = NodeTier.Dram, Dictionary<uint, double>? weights = null) =>
        new() { Id = "job-1", Token = JobToken.NewRandom(), Tier = tier, Weights = weights ?? [] };

    [Fact]
    public void FreedBlocksAreUsedAgainBeforeNewOnesLowestRunThatFitsFirst()
    {
        var allocator = new BlockAllocator(256);
        Assert.Equal((0, 4), allocator.AllocateRun(4));
        Assert.Equal((4, 4), allocator.AllocateRun(4));
        Assert.Equal((8, 4), allocator.AllocateRun(4));

        // A freed run is taken again before the untouched space above.
        allocator.Free(4, 4);
        Assert.Equal((4, 4), allocator.AllocateRun(4));

        // A request larger than the lowest hole goes to the lowest space that holds it; the hole serves the next small one.
        allocator.Free(0, 2);
        Assert.Equal((12, 8), allocator.AllocateRun(8));
        Assert.Equal((0, 2), allocator.AllocateRun(2));

        // Space cut into short runs only: the lowest run, and the rest of the request elsewhere.
        var fragmented = new BlockAllocator(128);
        Assert.Equal((0, 128), fragmented.AllocateRun(128));
        for (var block = 0; block < 128; block += 2)
        {
            fragmented.Free(block, 1);
        }

        Assert.Equal((0, 1), fragmented.AllocateRun(4));
        Assert.Equal((2, 1), fragmented.AllocateRun(4));
        Assert.Equal(62, fragmented.FreeBlocks);
    }

    [Fact]
    public void SpillOrderIsOwnTierThenSlowerThenFaster()
    {
        Assert.Equal([NodeTier.Ssd, NodeTier.Hdd, NodeTier.Dram], PlacementPolicy.SpillOrder(NodeTier.Ssd));
        Assert.Equal([NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd], PlacementPolicy.SpillOrder(NodeTier.Dram));
        Assert.Equal([NodeTier.Hdd, NodeTier.Ssd, NodeTier.Dram], PlacementPolicy.SpillOrder(NodeTier.Hdd));
    }

    [Fact]
    public void WeightsDecideAndUnweightedNodesGetNothing()
    {
        var a = Node(1, NodeTier.Dram, 1000);
        var b = Node(2, NodeTier.Dram, 1000);
        var c = Node(3, NodeTier.Dram, 1000);
        var job = Job(weights: new() { [1] = 3, [2] = 1 });
        var random = new Random(7);
        var picks = new Dictionary<uint, int>();
        for (var i = 0; i < 4000; i++)
        {
            var node = PlacementPolicy.Choose(job, [a, b, c], Block, random)!;
            picks[node.Id] = picks.GetValueOrDefault(node.Id) + 1;
        }

        Assert.False(picks.ContainsKey(3));

        // 3:1 by weight: node 1 takes about three quarters (a seeded draw, with a wide margin).
        Assert.InRange(picks[1], 2700, 3300);
        Assert.Equal(0.0, PlacementPolicy.Weight(job, c));
        Assert.Equal(1.0, PlacementPolicy.Weight(Job(), a));
        Assert.Equal(0.0, PlacementPolicy.Weight(Job(NodeTier.Ssd), a));
    }

    [Fact]
    public void FullWeightedNodesSpillToTheEmptiestNodeOfTheNextTier()
    {
        var dram = Node(1, NodeTier.Dram, 1);
        var ssdSmall = Node(2, NodeTier.Ssd, 10);
        var ssdLarge = Node(3, NodeTier.Ssd, 20);
        var hdd = Node(4, NodeTier.Hdd, 100);
        var job = Job();
        Assert.Same(dram, PlacementPolicy.Choose(job, [dram, ssdSmall, ssdLarge, hdd], Block, new Random(1)));
        Assert.Same(ssdLarge, PlacementPolicy.Choose(job, [dram, ssdSmall, ssdLarge, hdd], 2 * Block, new Random(1)));
        Assert.Same(hdd, PlacementPolicy.Choose(job, [dram, ssdSmall, ssdLarge, hdd], 50 * Block, new Random(1)));
        Assert.Null(PlacementPolicy.Choose(job, [dram, ssdSmall, ssdLarge, hdd], 101 * Block, new Random(1)));
    }

    [Fact]
    public void AllocateStripesByUnitWithFreshGenerations()
    {
        var a = Node(1, NodeTier.Dram, 100);
        var into = new List<Extent>();
        var status = ExtentAllocator.Allocate(Job(), [a], (3 * 4 * Block) + 10, stripeUnit: 4 * Block, hddExtent: 16 * Block, new Random(1), into, out _);
        Assert.Equal(Status.Ok, status);
        Assert.Equal([4 * Block, 4 * Block, 4 * Block, 10], into.Select(e => e.Length));
        Assert.Equal([1u, 2u, 3u, 4u], into.Select(e => e.Generation));
        Assert.Equal(87, a.Allocator.FreeBlocks);
    }

    [Fact]
    public void AnHddNodeTakesALongRunAtOnce()
    {
        var disk = Node(1, NodeTier.Hdd, 100);
        var into = new List<Extent>();
        Assert.Equal(Status.Ok, ExtentAllocator.Allocate(Job(NodeTier.Hdd), [disk], 20 * Block, stripeUnit: 4 * Block, hddExtent: 16 * Block, new Random(1), into, out _));
        Assert.Equal([16 * Block, 4 * Block], into.Select(e => e.Length));
    }

    [Fact]
    public void AFailedAllocationLeavesNothingAllocated()
    {
        var a = Node(1, NodeTier.Dram, 10);
        var b = Node(2, NodeTier.Ssd, 10);
        var into = new List<Extent> { new(9, 1, 0, Block, NodeTier.Dram) };
        var status = ExtentAllocator.Allocate(Job(), [a, b], 21 * Block, stripeUnit: Block, hddExtent: Block, new Random(1), into, out var error);
        Assert.Equal(Status.CapacityExceeded, status);
        Assert.Contains("capacity exceeded", error, StringComparison.Ordinal);
        Assert.Single(into);
        Assert.Equal(10, a.Allocator.FreeBlocks);
        Assert.Equal(10, b.Allocator.FreeBlocks);

        Assert.Equal(Status.NoNodes, ExtentAllocator.Allocate(Job(), [], Block, Block, Block, new Random(1), into, out error));
        Assert.Equal("no live storage nodes", error);
    }

    [Fact]
    public void AllocateOnSplitsAcrossFragmentedFreeSpace()
    {
        var a = Node(1, NodeTier.Dram, 8);
        var first = new List<Extent>();
        ExtentAllocator.AllocateOn(a, 8 * Block, first);
        ExtentAllocator.Free(a, first[0] with { Offset = 2 * Block, Length = 2 * Block });
        ExtentAllocator.Free(a, first[0] with { Offset = 5 * Block, Length = 2 * Block });
        var copies = new List<Extent>();
        ExtentAllocator.AllocateOn(a, (3 * Block) + 1, copies);
        Assert.Equal(2, copies.Count);
        Assert.Equal((3 * Block) + 1, copies.Sum(e => e.Length));
        Assert.Equal(0, a.Allocator.FreeBlocks);
        Assert.All(copies, e => Assert.Equal(1u, e.NodeId));
    }
}
