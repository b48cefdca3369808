using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using Pocket.Storage;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Draining a node moves its live blocks elsewhere while readers keep reading; nothing is lost.</summary>
public sealed class DrainTests
{
    private static int SizeFor(int i) => (i % 5) switch
    {
        0 => 700,
        1 => 40_000,
        2 => 300_000 + i,
        3 => 1_100_000 + i,
        _ => 2_600_000 + (i * 7),
    };

    private static async Task<NodeInfo?> NodeAsync(PocketAdminClient admin, uint id, CancellationToken token) =>
        (await admin.GetNodesAsync(token)).SingleOrDefault(n => n.Id == id);

    [Fact]
    public async Task DrainMovesEveryBlockWhileReadersVerifyChecksums()
    {
        await using var cluster = await StartClusterAsync(nodes: 3, capacity: 96L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("drained", cts.Token);
        var victim = cluster.Nodes[0]!.NodeId;
        var data = new Dictionary<string, string>();
        for (var i = 0; i < 50; i++)
        {
            var key = $"obj/{i}";
            var bytes = DataFor(key, SizeFor(i));
            data[key] = Hash(bytes);
            await job.PutAsync(key, bytes, cancellationToken: cts.Token);
        }

        var before = (await NodeAsync(cluster.Admin(client), victim, cts.Token))!;
        Assert.True(before.Used > 0, "the victim holds blocks before the drain");

        // Readers keep reading every object through the whole drain; any error or bad checksum is kept.
        using var stopReaders = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var reads = 0L;
        async Task ReadLoopAsync()
        {
            while (!stopReaders.IsCancellationRequested)
            {
                foreach (var (key, hash) in data)
                {
                    try
                    {
                        var got = await job.GetAsync(key, cancellationToken: stopReaders.Token);
                        if (Hash(got) != hash)
                        {
                            failures.Enqueue($"{key}: bad checksum");
                        }

                    }
                    catch (OperationCanceledException) when (stopReaders.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (PocketException ex)
                    {
                        failures.Enqueue($"{key}: {ex.Message}");
                    }

                    Interlocked.Increment(ref reads);
                }
            }
        }

        var readers = Enumerable.Range(0, 2).Select(_ => Task.Run(ReadLoopAsync)).ToList();
        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);

        // Writes during the drain never land on the draining node.
        var during = DataFor("during", 3_000_000);
        await job.PutAsync("during", during, cancellationToken: cts.Token);
        Assert.DoesNotContain((await job.LookupAsync("during", cts.Token))!.Blocks, b => b.NodeId == victim);

        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim, cts.Token))!.State == NodeState.Drained, "the victim is drained");
        var readsAtDrained = Interlocked.Read(ref reads);
        await WaitUntilAsync(() => Task.FromResult(readers.Any(r => r.IsCompleted) || Interlocked.Read(ref reads) > readsAtDrained + data.Count), "readers read everything once more after the drain");
        Assert.Empty(failures);
        await stopReaders.CancelAsync();
        await Task.WhenAll(readers);
        Assert.Empty(failures);
        data["during"] = Hash(during);

        var drained = (await NodeAsync(cluster.Admin(client), victim, cts.Token))!;
        Assert.Equal(0, drained.Used);
        Assert.True(drained.MovedBytes > 0, "the drain reports the bytes it moved");
        foreach (var key in data.Keys)
        {
            Assert.DoesNotContain((await job.LookupAsync(key, cts.Token))!.Blocks, b => b.NodeId == victim);
        }

        // The controller would now stop the node; the metadata server forgets it and every object still reads.
        await cluster.StopNodeAsync(0);
        await WaitUntilAsync(async () => await NodeAsync(cluster.Admin(client), victim, cts.Token) is null, "the drained node is removed");
        foreach (var (key, hash) in data)
        {
            Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        // Deleting everything frees exactly what the remaining nodes hold.
        await cluster.Admin(client).DeregisterJobAsync(job.Id, cts.Token);
        await WaitForUsedAsync(cluster.Admin(client), 0);
    }

    [Fact]
    public async Task ANodeKilledDuringItsDrainLosesOnlyWhatWasNotMovedYet()
    {
        // A slow victim device keeps the drain going long enough to kill the node part-way through.
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 96L << 20);
        var slow = await cluster.AddNodeAsync(deviceFactory: o => new SimulatedDevice(new NativeMemoryDevice(o.Capacity, false), "slow", TimeSpan.Zero, 8e6));
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("killed", cts.Token);
        var victim = cluster.Nodes[slow]!.NodeId;
        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [victim] = 1 }, cts.Token);
        var data = new Dictionary<string, string>();
        for (var i = 0; i < 24; i++)
        {
            var key = $"k/{i}";
            var bytes = DataFor(key, 1_000_000 + i);
            data[key] = Hash(bytes);
            await job.PutAsync(key, bytes, cancellationToken: cts.Token);
        }

        await cluster.Admin(client).SetWeightsAsync(job.Id, new Dictionary<uint, double>(), cts.Token);
        await cluster.Admin(client).DrainNodeAsync(victim, cts.Token);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim, cts.Token))!.MovedBytes > 0, "the drain has moved something");
        await cluster.StopNodeAsync(slow);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(client), victim, cts.Token))?.State is NodeState.Dead or null, "the killed node is noticed");

        var moved = 0;
        foreach (var (key, hash) in data)
        {
            var info = (await job.LookupAsync(key, cts.Token))!;
            if (info.Blocks.Any(b => b.NodeId == victim))
            {
                var error = await Assert.ThrowsAsync<NodeLostException>(async () => await job.GetAsync(key, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token));
                Assert.Contains(key, error.Message, StringComparison.Ordinal);
            }
            else
            {
                moved++;
                Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
            }
        }

        Assert.True(moved > 0, "objects moved before the kill stay readable");

        // Placement goes on without the dead node.
        var after = DataFor("after", 2_000_000);
        await job.PutAsync("after", after, cancellationToken: cts.Token);
        Assert.Equal(Hash(after), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task DrainNeedsTheClusterTokenAndAKnownNode()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var admin = await cluster.ConnectAsync();
        await using var stranger = await PocketClient.ConnectAsync(cluster.MetadataAddress);
        using var cts = Timeout();
        var node = cluster.Nodes[0]!.NodeId;
        await Assert.ThrowsAsync<PocketUnauthorizedException>(() => stranger.Admin(JobToken.None).DrainNodeAsync(node, cts.Token));
        Assert.Equal(NodeState.Live, (await NodeAsync(cluster.Admin(admin), node, cts.Token))!.State);
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => cluster.Admin(admin).DrainNodeAsync(9999, cts.Token));

        // An empty node drains at once; draining it again changes nothing.
        await cluster.Admin(admin).DrainNodeAsync(node, cts.Token);
        await WaitUntilAsync(async () => (await NodeAsync(cluster.Admin(admin), node, cts.Token))!.State == NodeState.Drained, "the empty node is drained");
        await cluster.Admin(admin).DrainNodeAsync(node, cts.Token);
        Assert.Equal(NodeState.Drained, (await NodeAsync(cluster.Admin(admin), node, cts.Token))!.State);
    }
}
