using CsCheck;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Metadata.Placement;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using Pocket.StorageServer;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Several metadata servers sharing storage nodes: each allocates only in its share of a node, and shares move without a block ever being allocatable by two servers.</summary>
public sealed class MetadataPlaneTests
{
    private const int Servers = 3;

    /// <summary>
    /// Random allocations, frees, share moves, server deaths and rejoins over one node, done the way the node does them
    /// (the holder releases only empty segments, the node's <see cref="ShareTable"/> hands them on): after every step
    /// no segment is held by two servers, each server's allocator holds exactly its share, and every allocated block
    /// belongs to one server and lies inside its share.
    /// </summary>
    [Fact]
    public void SharesNeverOverlapUnderRandomMoves()
    {
        var step = Gen.Select(Gen.Int[0, 4], Gen.Int[0, Servers - 1], Gen.Int[0, Servers - 1], Gen.Int[1, 40]);
        Gen.Select(Gen.Long[1, 4000], step.Array[1, 150]).Sample((blocks, steps) => Run(blocks, steps), iter: 400);

        static void Run(long blocks, (int Kind, int A, int B, int N)[] steps)
        {
            var table = new ShareTable(Servers);
            var allocators = new BlockAllocator?[Servers];
            var extents = Enumerable.Range(0, Servers).Select(_ => new List<(long First, long Count)>()).ToArray();
            var owner = new int[blocks];
            Array.Fill(owner, -1);
            for (var i = 0; i < Servers; i++)
            {
                var share = ShareTable.Run(i, Servers);
                table.Give(i, share);
                allocators[i] = new BlockAllocator(blocks, share);
            }

            foreach (var (kind, a, b, n) in steps)
            {
                var up = Enumerable.Range(0, Servers).Where(i => allocators[i] is not null).ToList();
                switch (kind)
                {
                    case 0 when allocators[a] is { } allocator:
                        var (first, count) = allocator.AllocateRun(n);
                        for (var block = first; block < first + count; block++)
                        {
                            Assert.True(owner[block] == -1, $"block {block} allocated by server {a} while server {owner[block]} holds it");
                            owner[block] = a;
                        }

                        if (count > 0)
                        {
                            extents[a].Add((first, count));
                        }

                        break;
                    case 1 when allocators[a] is { } allocator && extents[a].Count > 0:
                        var freed = extents[a][n % extents[a].Count];
                        extents[a].Remove(freed);
                        allocator.Free(freed.First, freed.Count);
                        for (var block = freed.First; block < freed.First + freed.Count; block++)
                        {
                            owner[block] = -1;
                        }

                        break;
                    case 2 when a != b && allocators[a] is { } from && allocators[b] is { } to:
                        var moved = from.Release(n % 8 + 1);
                        table.Take(a, moved);
                        table.Give(b, moved);
                        to.Add(moved);
                        break;
                    case 3 when allocators[a] is not null && up.Count > 1:
                        // A server dies: its blocks are reset on the node and its segments go, one by one, to the emptiest survivor.
                        var lost = table.Held(a);
                        table.Take(a, lost);
                        allocators[a] = null;
                        extents[a].Clear();
                        for (var block = 0L; block < blocks; block++)
                        {
                            owner[block] = owner[block] == a ? -1 : owner[block];
                        }

                        for (var rest = lost; rest != 0; rest &= rest - 1)
                        {
                            var segment = rest & (~rest + 1);
                            var fewest = up.Where(i => i != a).MinBy(i => ShareTable.Count(table.Held(i)));
                            table.Give(fewest, segment);
                            allocators[fewest]!.Add(segment);
                        }

                        break;
                    case 4 when allocators[a] is null:
                        // It comes back: it gets what nobody holds and the others' free surplus over an even split.
                        var target = ShareTable.Segments / (up.Count + 1);
                        var share = table.Unowned;
                        foreach (var other in up)
                        {
                            var surplus = ShareTable.Count(table.Held(other)) - target;
                            if (surplus > 0)
                            {
                                var released = allocators[other]!.Release(surplus);
                                table.Take(other, released);
                                share |= released;
                            }
                        }

                        table.Give(a, share);
                        allocators[a] = new BlockAllocator(blocks, share);
                        break;
                }

                Check(blocks, table, allocators, owner);
            }
        }

        static void Check(long blocks, ShareTable table, BlockAllocator?[] allocators, int[] owner)
        {
            ulong seen = 0;
            for (var i = 0; i < Servers; i++)
            {
                if (allocators[i] is not { } allocator)
                {
                    Assert.Equal(0UL, table.Held(i));
                    continue;
                }

                Assert.Equal(table.Held(i), allocator.Share);
                Assert.Equal(0UL, seen & allocator.Share);
                seen |= allocator.Share;
                var allocated = owner.LongCount(o => o == i);
                Assert.Equal(allocator.ShareBlocks - allocated, allocator.FreeBlocks);
            }

            for (var block = 0L; block < blocks; block++)
            {
                var holders = Enumerable.Range(0, Servers).Count(i => allocators[i] is { } allocator && (allocator.Share & (1UL << allocator.SegmentOf(block))) != 0);
                Assert.True(holders <= 1, $"block {block} is in {holders} shares");
                if (owner[block] >= 0)
                {
                    Assert.True(allocators[owner[block]]!.IsAllocated(block));
                }
            }
        }
    }

    [Fact]
    public async Task EachMetadataServerAllocatesOnlyInItsShareOfANode()
    {
        const long Capacity = 64L << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity, o => o with { MetadataServers = 2, PreTouchMemory = false });
        using var cts = Timeout();
        var options = new PocketClientOptions();
        await using var first = await PocketClient.ConnectAsync(cluster.MetadataAddresses[0], options, cts.Token);
        await using var second = await PocketClient.ConnectAsync(cluster.MetadataAddresses[1], options, cts.Token);

        var node = cluster.Nodes[0]!;
        foreach (var client in new[] { first, second })
        {
            var listed = Assert.Single(await client.Admin(cluster.Options.ClusterToken).GetNodesAsync(cts.Token));
            Assert.Equal(node.NodeId, listed.Id);
            Assert.Equal(Capacity / 2, listed.Capacity);
        }

        var jobA = await first.Admin(cluster.Options.ClusterToken).RegisterJobAsync("share-a", cts.Token);
        var jobB = await second.Admin(cluster.Options.ClusterToken).RegisterJobAsync("share-b", cts.Token);
        var a = RandomBytes(24 << 20, 1);
        var b = RandomBytes(24 << 20, 2);
        await jobA.PutAsync("a", a, cancellationToken: cts.Token);
        await jobB.PutAsync("b", b, cancellationToken: cts.Token);
        Assert.Equal(Hash(a), Hash(await jobA.GetAsync("a", cancellationToken: cts.Token)));
        Assert.Equal(Hash(b), Hash(await jobB.GetAsync("b", cancellationToken: cts.Token)));

        // The first server holds the low half of the node, the second the high half.
        Assert.All((await jobA.LookupAsync("a", cts.Token))!.Blocks, block => Assert.True(block.Offset + block.Length <= Capacity / 2));
        Assert.All((await jobB.LookupAsync("b", cts.Token))!.Blocks, block => Assert.True(block.Offset >= Capacity / 2));

        // A server's share is full although the node has room in the other's.
        var full = await Assert.ThrowsAnyAsync<PocketException>(async () => await jobA.PutAsync("more", RandomBytes(12 << 20, 3), cancellationToken: cts.Token));
        Assert.Equal(Status.CapacityExceeded, full.Status);
        Assert.Equal(Hash(b), Hash(await jobB.GetAsync("b", cancellationToken: cts.Token)));
    }

    [Fact]
    public void ASilentMetadataServerIsWarnedOfOnceThenEveryTenSecondsNotEveryHeartbeat()
    {
        // During a partition the node's heartbeat to the cut server goes unanswered every second: one warning when
        // it falls silent, then one per SilenceWarningEvery; an answer in between makes the next silence worth one.
        var time = new FakeTimeProvider();
        var answered = time.GetTimestamp();
        var warned = 0L;
        var warnings = new List<int>();
        for (var second = 1; second <= 25; second++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            if (second == 15)
            {
                answered = time.GetTimestamp();
                continue;
            }

            var now = time.GetTimestamp();
            if (StorageServer.StorageServer.WarnOfSilence(answered, warned, now, time))
            {
                warned = now;
                warnings.Add(second);
            }
        }

        Assert.Equal([1, 11, 16], warnings);
    }

    [Fact]
    public async Task EachShareOfANodeChecksGrantsWithItsOwnServersSecret()
    {
        // The node checks a grant with the secret of the server holding the grant's segments, so a server can sign
        // only for its own share: each half has its own secret, and a range across both has none.
        const long Capacity = 64L << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity, o => o with { MetadataServers = 2, PreTouchMemory = false });
        var node = cluster.Nodes[0]!;
        var low = node.SecretOfRange(0, 1 << 20);
        var high = node.SecretOfRange(Capacity / 2, 1 << 20);
        Assert.NotNull(low);
        Assert.NotNull(high);
        Assert.Equal(RegisterNodeRequest.SecretSize, low.Length);
        Assert.NotEqual(low, high);
        Assert.Same(low, node.SecretOfRange((Capacity / 2) - (1 << 20), 1 << 20));
        Assert.Null(node.SecretOfRange((Capacity / 2) - 4096, 8192));
        Assert.Null(node.SecretOfRange(Capacity - 4096, 8192));
    }

    [Fact]
    public async Task AStoppedMetadataServersShareGoesToTheOtherAndComesBackWhenItReturns()
    {
        const long Capacity = 64L << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity, o => o with { MetadataServers = 2, PreTouchMemory = false });
        using var cts = Timeout();
        var options = new PocketClientOptions();
        await using var first = await PocketClient.ConnectAsync(cluster.MetadataAddresses[0], options, cts.Token);
        var job = await first.Admin(cluster.Options.ClusterToken).RegisterJobAsync("survivor", cts.Token);
        var data = RandomBytes(20 << 20, 4);
        await job.PutAsync("kept", data, cancellationToken: cts.Token);

        await cluster.StopMetadataAsync(1);
        await WaitUntilAsync(async () => (await first.Admin(cluster.Options.ClusterToken).GetNodesAsync(cts.Token)).Single().Capacity == Capacity, "the first server holds the whole node");
        Assert.Equal(Hash(data), Hash(await job.GetAsync("kept", cancellationToken: cts.Token)));

        // The whole node is usable by the survivor now: 40 MiB more fit beside the 20 MiB.
        await job.PutAsync("grown", RandomBytes(40 << 20, 5), cancellationToken: cts.Token);
        await job.DeleteAsync("grown", cancellationToken: cts.Token);

        // A replacement at the same address gets the survivor's free segments back, up to an even split.
        await cluster.RestartMetadataAsync(1, cts.Token);
        await using var second = await PocketClient.ConnectAsync(cluster.MetadataAddresses[1], options, cts.Token);
        await WaitUntilAsync(async () => (await second.Admin(cluster.Options.ClusterToken).GetNodesAsync(cts.Token)).SingleOrDefault()?.Capacity == Capacity / 2, "the replacement holds half the node");
        Assert.Equal(Capacity / 2, (await first.Admin(cluster.Options.ClusterToken).GetNodesAsync(cts.Token)).Single().Capacity);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("kept", cancellationToken: cts.Token)));
        var fresh = await second.Admin(cluster.Options.ClusterToken).RegisterJobAsync("fresh", cts.Token);
        var more = RandomBytes(8 << 20, 6);
        await fresh.PutAsync("new", more, cancellationToken: cts.Token);
        Assert.Equal(Hash(more), Hash(await fresh.GetAsync("new", cancellationToken: cts.Token)));
    }

    /// <summary>
    /// The node's balancing rounds, done as the node does them (targets from what each server uses and wants, one move
    /// a round of free segments only), under random allocations, frees and changes of demand: no segment is ever held
    /// by two servers, no allocated block changes server, and while demand holds still the distance to the targets
    /// never grows.
    /// </summary>
    [Fact]
    public void SharesFollowDemandWithoutOverlapAndNoAllocatedBlockMoves()
    {
        var step = Gen.Select(Gen.Int[0, 3], Gen.Int[0, Servers - 1], Gen.Int[0, 64], Gen.Int[1, 40]);
        Gen.Select(Gen.Long[64, 4000], step.Array[1, 120]).Sample((blocks, steps) => Run(blocks, steps), iter: 300);

        static void Run(long blocks, (int Kind, int A, int N, int Size)[] steps)
        {
            var table = new ShareTable(Servers);
            var allocators = new BlockAllocator[Servers];
            var extents = Enumerable.Range(0, Servers).Select(_ => new List<(long First, long Count)>()).ToArray();
            var owner = new int[blocks];
            Array.Fill(owner, -1);
            var wanted = new int[Servers];
            for (var i = 0; i < Servers; i++)
            {
                table.Give(i, ShareTable.Run(i, Servers));
                allocators[i] = new BlockAllocator(blocks, table.Held(i));
            }

            var distance = int.MaxValue;
            foreach (var (kind, a, n, size) in steps)
            {
                switch (kind)
                {
                    case 0:
                        var (first, count) = allocators[a].AllocateRun(size);
                        for (var block = first; block < first + count; block++)
                        {
                            owner[block] = a;
                        }

                        if (count > 0)
                        {
                            extents[a].Add((first, count));
                        }

                        distance = int.MaxValue;
                        break;
                    case 1 when extents[a].Count > 0:
                        var freed = extents[a][n % extents[a].Count];
                        extents[a].Remove(freed);
                        allocators[a].Free(freed.First, freed.Count);
                        for (var block = freed.First; block < freed.First + freed.Count; block++)
                        {
                            owner[block] = -1;
                        }

                        distance = int.MaxValue;
                        break;
                    case 2:
                        wanted[a] = n;
                        distance = int.MaxValue;
                        break;
                    default:
                        // One balancing round, as StorageServer.BalanceAsync does it.
                        var segmentBlocks = allocators[0].SegmentBlocks;
                        var demand = Enumerable.Range(0, Servers).Select(i => ((int)Math.Min(64, ((allocators[i].ShareBlocks - allocators[i].FreeBlocks) + segmentBlocks - 1) / segmentBlocks), wanted[i])).ToList();
                        var targets = ShareTable.Targets(demand);
                        Assert.Equal(ShareTable.Segments, targets.Sum());
                        if (wanted.Sum() > 0 && demand.Sum(d => Math.Max(ShareTable.MinSegments(Servers), d.Item1)) <= ShareTable.Segments)
                        {
                            Assert.All(targets, t => Assert.True(t >= ShareTable.MinSegments(Servers)));
                        }

                        var held = Enumerable.Range(0, Servers).Select(i => ShareTable.Count(table.Held(i))).ToArray();
                        var now = held.Zip(targets, (h, t) => Math.Abs(h - t)).Sum();
                        Assert.True(now <= distance, $"a round moved away from the targets: {now} > {distance}");
                        distance = now;
                        if (ShareTable.PlanMove(held, targets) is var (from, to, moveCount))
                        {
                            Assert.InRange(moveCount, 1, ShareTable.MaxMove);
                            var moved = allocators[from].Release(moveCount);
                            table.Take(from, moved);
                            table.Give(to, moved);
                            allocators[to].Add(moved);
                        }

                        break;
                }

                ulong seen = 0;
                for (var i = 0; i < Servers; i++)
                {
                    Assert.Equal(table.Held(i), allocators[i].Share);
                    Assert.Equal(0UL, seen & allocators[i].Share);
                    seen |= allocators[i].Share;
                }

                for (var block = 0L; block < blocks; block++)
                {
                    if (owner[block] >= 0)
                    {
                        var held = allocators[owner[block]];
                        Assert.True(held.IsAllocated(block) && (held.Share & (1UL << held.SegmentOf(block))) != 0, $"block {block} of server {owner[block]} moved");
                    }
                }
            }
        }
    }

    [Fact]
    public void TargetsSplitEvenlyWithoutDemandAndFollowDemandKeepingAMinimum()
    {
        Assert.Equal([32, 32], ShareTable.Targets([(10, 0), (0, 0)]));
        Assert.Equal([22, 21, 21], ShareTable.Targets([(0, 0), (0, 0), (0, 0)]));

        // One server's jobs want 48 segments more, the other is idle: the idle one keeps its minimum and half the spare.
        Assert.Equal([52, 12], ShareTable.Targets([(0, 48), (0, 0)]));

        // More wanted than the node has: each keeps what it uses (at least the minimum), the rest by what each wants.
        Assert.Equal([44, 20], ShareTable.Targets([(20, 60), (4, 30)]));
        Assert.Equal([0, 0, 64], ShareTable.Targets([(0, 1000), (0, 1), (64, 5)]));

        Assert.Equal((1, 0, 8), ShareTable.PlanMove([32, 32], [52, 12]));
        Assert.Equal((1, 0, 3), ShareTable.PlanMove([49, 15], [52, 12]));
        Assert.Null(ShareTable.PlanMove([52, 12], [52, 12]));
    }

    [Fact]
    public async Task AJobsReservationGrowsItsServersShareWithoutRestartingTheNode()
    {
        const long Capacity = 64L << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: Capacity, o => o with { MetadataServers = 2, PreTouchMemory = false, HeartbeatInterval = TimeSpan.FromMilliseconds(200) });
        using var cts = Timeout();
        var options = new PocketClientOptions();
        await using var busy = await PocketClient.ConnectAsync(cluster.MetadataAddresses[0], options, cts.Token);
        await using var idle = await PocketClient.ConnectAsync(cluster.MetadataAddresses[1], options, cts.Token);
        var busyAdmin = busy.Admin(cluster.Options.ClusterToken);
        var idleAdmin = idle.Admin(cluster.Options.ClusterToken);
        Assert.Equal(Capacity / 2, (await busyAdmin.GetNodesAsync(cts.Token)).Single().Capacity);

        // A job reserving 48 MiB (its byte quota, as the controller's sizing sets it) on the first server; none on the second.
        var job = await busyAdmin.RegisterJobAsync("big", NodeTier.Dram, weights: null, new JobQuota(48L << 20, 0, 0), cts.Token);
        var node = cluster.Nodes[0]!;
        await WaitUntilAsync(async () => (await busyAdmin.GetNodesAsync(cts.Token)).Single().Capacity >= 48L << 20, "the busy server's share grows past its reservation");
        Assert.True(node.Shares[1] != 0, "the idle server keeps a minimum share");
        Assert.Equal(0UL, node.Shares[0] & node.Shares[1]);

        // 40 MiB: more than an even split (32 MiB) could hold; every put succeeds and reads back.
        var data = Enumerable.Range(0, 4).Select(i => RandomBytes(10 << 20, 20 + i)).ToArray();
        for (var i = 0; i < data.Length; i++)
        {
            await job.PutAsync($"part-{i}", data[i], cancellationToken: cts.Token);
        }

        for (var i = 0; i < data.Length; i++)
        {
            Assert.Equal(Hash(data[i]), Hash(await job.GetAsync($"part-{i}", cancellationToken: cts.Token)));
        }

        // The idle server can still place a new job in its minimum share.
        var small = await idleAdmin.RegisterJobAsync("small", cts.Token);
        var more = RandomBytes(4 << 20, 30);
        await small.PutAsync("x", more, cancellationToken: cts.Token);
        Assert.Equal(Hash(more), Hash(await small.GetAsync("x", cancellationToken: cts.Token)));
        Assert.Equal(Capacity, (await busyAdmin.GetNodesAsync(cts.Token)).Single().Capacity + (await idleAdmin.GetNodesAsync(cts.Token)).Single().Capacity);
    }
}
