using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>Tiers: the same contract on every tier, spill dram -> ssd -> hdd, and capacity returned on every tier.</summary>
public sealed class TierTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-tiers-").FullName;

    private Task<PocketCluster> StartAsync() =>
        PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 0, PreTouchMemory = false, DataDirectory = _directory });

    public static TheoryData<NodeTier> Tiers => [NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd];

    [Theory]
    [MemberData(nameof(Tiers))]
    public async Task EveryTierKeepsTheObjectContract(NodeTier tier)
    {
        await using var cluster = await StartAsync();
        await cluster.AddNodeAsync(16 << 20, tier: tier);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("contract", tier);
        var objects = new Dictionary<string, byte[]>();
        foreach (var size in new[] { 0, 1, 70_000, (64 << 10) - 1, 3 << 20 })
        {
            var data = RandomNumberGenerator.GetBytes(size);
            objects[$"o/{size}"] = data;
            await job.PutAsync($"o/{size}", data);
        }

        foreach (var (key, data) in objects)
        {
            Assert.Equal(data, await job.GetAsync(key));
        }

        var big = objects[$"o/{3 << 20}"];
        var range = new byte[100_000];
        Assert.Equal(range.Length, await job.GetAsync($"o/{3 << 20}", (1 << 20) - 50_000, range));
        Assert.Equal(big.AsSpan((1 << 20) - 50_000, 100_000).ToArray(), range);

        var usage = await job.GetUsageAsync();
        Assert.Equal(tier, usage.Tier);
        Assert.True(usage.BytesByTier[tier] >= 3 << 20);

        Assert.Equal(objects.Count, await job.DeleteAsync("o/", recursive: true));
        Assert.All(await cluster.Admin(client).GetNodesAsync(), n => Assert.Equal(0, n.Used));
    }

    [Fact]
    public async Task AFullTierSpillsToTheNextTierDownAndOnlyAllFullFails()
    {
        await using var cluster = await StartAsync();
        await cluster.AddNodeAsync(4 << 20, tier: NodeTier.Dram);
        await cluster.AddNodeAsync(8 << 20, tier: NodeTier.Ssd);
        await cluster.AddNodeAsync(8 << 20, tier: NodeTier.Hdd);
        await using var client = await cluster.ConnectAsync();
        var nodes = (await cluster.Admin(client).GetNodesAsync()).ToDictionary(n => n.Id, n => n.Tier);
        var job = await cluster.Admin(client).RegisterJobAsync("spill");

        var first = RandomNumberGenerator.GetBytes(10 << 20);
        await job.PutAsync("first", first);
        var firstTiers = (await job.LookupAsync("first"))!.Blocks.Select(b => nodes[b.NodeId]).ToHashSet();
        Assert.Equal([NodeTier.Dram, NodeTier.Ssd], firstTiers.Order());

        var second = RandomNumberGenerator.GetBytes(8 << 20);
        await job.PutAsync("second", second);
        var secondTiers = (await job.LookupAsync("second"))!.Blocks.Select(b => nodes[b.NodeId]).ToHashSet();
        Assert.Contains(NodeTier.Hdd, secondTiers);
        Assert.DoesNotContain(NodeTier.Dram, secondTiers);

        var usage = await job.GetUsageAsync();
        Assert.Equal(4 << 20, usage.BytesByTier[NodeTier.Dram]);
        Assert.Equal(8 << 20, usage.BytesByTier[NodeTier.Ssd]);
        Assert.Equal(6 << 20, usage.BytesByTier[NodeTier.Hdd]);

        // 2 MiB left in all: a 3 MiB object fails whole, leaving nothing behind.
        var full = await Assert.ThrowsAsync<CapacityExceededException>(async () => await job.PutAsync("third", new byte[3 << 20]));
        Assert.Contains("capacity exceeded", full.Message, StringComparison.Ordinal);
        Assert.False(await job.ExistsAsync("third"));
        Assert.Equal(18 << 20, (await cluster.Admin(client).GetNodesAsync()).Sum(n => n.Used));

        // Reads work wherever the blocks live.
        Assert.Equal(first, await job.GetAsync("first"));
        Assert.Equal(second, await job.GetAsync("second"));

        await job.DeleteAsync("first");
        await job.DeleteAsync("second");
        Assert.All(await cluster.Admin(client).GetNodesAsync(), n => Assert.Equal(0, n.Used));
        Assert.All((await job.GetUsageAsync()).BytesByTier.Values, bytes => Assert.Equal(0, bytes));
    }

    [Fact]
    public async Task AJobOfASlowerTierStartsThereAndSpillsUpOnlyWhenTheRestIsFull()
    {
        await using var cluster = await StartAsync();
        await cluster.AddNodeAsync(8 << 20, tier: NodeTier.Dram);
        await cluster.AddNodeAsync(4 << 20, tier: NodeTier.Ssd);
        await using var client = await cluster.ConnectAsync();
        var nodes = (await cluster.Admin(client).GetNodesAsync()).ToDictionary(n => n.Id, n => n.Tier);
        var job = await cluster.Admin(client).RegisterJobAsync("flash", NodeTier.Ssd);

        await job.PutAsync("a", new byte[3 << 20]);
        Assert.All((await job.LookupAsync("a"))!.Blocks, b => Assert.Equal(NodeTier.Ssd, nodes[b.NodeId]));

        // No slower tier exists, so the rest goes to the faster one rather than failing.
        await job.PutAsync("b", new byte[3 << 20]);
        Assert.Contains(NodeTier.Dram, (await job.LookupAsync("b"))!.Blocks.Select(b => nodes[b.NodeId]));
    }

    [Fact]
    public async Task AnHddNodeTakesSeveralStripeUnitsInOneContiguousRun()
    {
        await using var cluster = await StartAsync();
        await cluster.AddNodeAsync(32 << 20, tier: NodeTier.Hdd);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("disk", NodeTier.Hdd);
        var data = RandomNumberGenerator.GetBytes(10 << 20);
        await job.PutAsync("big", data);

        // 4 MiB runs (MetadataServerOptions.HddExtent), each one extent, back to back on the disk.
        var blocks = (await job.LookupAsync("big"))!.Blocks;
        Assert.Equal(new[] { 4 << 20, 4 << 20, 2 << 20 }, blocks.Select(b => b.Length));
        for (var i = 1; i < blocks.Count; i++)
        {
            Assert.Equal(blocks[i - 1].Offset + blocks[i - 1].Length, blocks[i].Offset);
        }

        Assert.Equal(data, await job.GetAsync("big"));
        await job.DeleteAsync("big");
        Assert.Equal(0, (await cluster.Admin(client).GetNodesAsync()).Single().Used);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
