using Pocket.Admin;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Large objects are cut into stripe units spread over the job's nodes.</summary>
public sealed class StripingTests
{
    [Fact]
    public async Task LargeObjectHasBlocksOnEveryNode()
    {
        await using var cluster = await StartClusterAsync(nodes: 3, capacity: 128L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("stripes", cts.Token);
        var data = RandomBytes(64 << 20, 64);
        await job.PutAsync("wide", data, cancellationToken: cts.Token);

        var info = await job.LookupAsync("wide", cts.Token);
        Assert.NotNull(info);
        Assert.False(info.Inline);
        var nodeIds = cluster.Nodes.Select(n => n!.NodeId).ToHashSet();
        Assert.Equal(nodeIds, info.Blocks.Select(b => b.NodeId).ToHashSet());
        Assert.All(info.Blocks, b => Assert.Equal(NodeState.Live, b.NodeState));
        Assert.All(info.Blocks, b => Assert.True(b.Length is > 0 and <= 1 << 20, "no piece is larger than the stripe unit"));
        Assert.Equal(data.Length, info.Blocks.Sum(b => (long)b.Length));

        // Every node's accounting matches the blocks the object holds on it.
        var nodes = await cluster.Admin(client).GetNodesAsync(cts.Token);
        foreach (var node in nodes)
        {
            var onNode = info.Blocks.Where(b => b.NodeId == node.Id).Sum(b => (b.Length + (64L << 10) - 1) / (64 << 10) * (64 << 10));
            Assert.Equal(onNode, node.Used);
        }

        // No two pieces overlap on one node.
        foreach (var group in info.Blocks.GroupBy(b => b.NodeId))
        {
            var sorted = group.OrderBy(b => b.Offset).ToList();
            for (var i = 1; i < sorted.Count; i++)
            {
                Assert.True(sorted[i - 1].Offset + sorted[i - 1].Length <= sorted[i].Offset, $"pieces overlap on node {group.Key}");
            }
        }

        Assert.Equal(Hash(data), Hash(await job.GetAsync("wide", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task WeightsSteerPlacement()
    {
        await using var cluster = await StartClusterAsync(nodes: 3);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("weighted", cts.Token);
        var only = cluster.Nodes[1]!.NodeId;
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [only] = 1.0 }, cts.Token);

        var data = RandomBytes(8 << 20, 8);
        await job.PutAsync("steered", data, cancellationToken: cts.Token);
        var info = await job.LookupAsync("steered", cts.Token);
        Assert.All(info!.Blocks, b => Assert.Equal(only, b.NodeId));
        Assert.Equal(Hash(data), Hash(await job.GetAsync("steered", cancellationToken: cts.Token)));

        // Back to uniform: the next large object spreads again.
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double>(), cts.Token);
        await job.PutAsync("spread", RandomBytes(32 << 20, 32), cancellationToken: cts.Token);
        Assert.Equal(3, (await job.LookupAsync("spread", cts.Token))!.Blocks.Select(b => b.NodeId).Distinct().Count());
    }

    [Fact]
    public async Task AJobRegisteredWithWeightsUsesThemFromItsFirstBlock()
    {
        await using var cluster = await StartClusterAsync(nodes: 3);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var only = cluster.Nodes[2]!.NodeId;
        var job = await cluster.Admin(client).RegisterJobAsync("weighted", NodeTier.Dram, new Dictionary<uint, double> { [only] = 1.0 }, cts.Token);

        var data = RandomBytes(8 << 20, 9);
        await job.PutAsync("steered", data, cancellationToken: cts.Token);
        Assert.All((await job.LookupAsync("steered", cts.Token))!.Blocks, b => Assert.Equal(only, b.NodeId));
        Assert.Equal(Hash(data), Hash(await job.GetAsync("steered", cancellationToken: cts.Token)));

        // A bad weight refuses the registration as a whole: no job is left behind.
        var refused = await Assert.ThrowsAnyAsync<Pocket.Client.PocketException>(() =>
            cluster.Admin(client).RegisterJobAsync("bad", NodeTier.Dram, new Dictionary<uint, double> { [only] = double.NaN }, cts.Token));
        Assert.Equal(Status.BadRequest, refused.Status);
        Assert.Contains($"weight of node {only}", refused.Message, StringComparison.Ordinal);
        Assert.Equal("bad-1", (await cluster.Admin(client).RegisterJobAsync("bad", cts.Token)).Id);
    }
}
