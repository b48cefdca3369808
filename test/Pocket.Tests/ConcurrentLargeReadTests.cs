using Pocket.Admin;
using Pocket.Client;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Eight large gets at once through one client, the map phase of `pocket demo`'s sort: each get reads 8 pieces of
/// 1 MiB at a time, so one node was asked for 20-26 MB of replies at once, past its bound for a client that stops
/// reading (16 MiB), and closed the connection mid-read ("object lost"). Two things mend it now, each alone: the node
/// holds back a connection's requests while its replies wait (FanInTests cover it), and the client keeps what it
/// asks a node for within a budget. Every get must return its bytes, and the budget must hold.
/// </summary>
public sealed class ConcurrentLargeReadTests
{
    [Fact]
    public async Task EightLargeGetsAtOnceThroughOneClientAllReturnTheirBytes()
    {
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 256L << 20);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("concurrent-reads");
        const int Objects = 8;
        const int Size = 24 << 20;
        var values = Enumerable.Range(0, Objects).Select(i => RandomBytes(Size, i)).ToArray();
        for (var i = 0; i < Objects; i++)
        {
            await job.PutAsync($"part-{i}", values[i]);
        }

        for (var round = 0; round < 2; round++)
        {
            var read = await Task.WhenAll(Enumerable.Range(0, Objects).Select(i => Task.Run(async () => await job.GetAsync($"part-{i}"))));
            for (var i = 0; i < Objects; i++)
            {
                Assert.True(values[i].AsSpan().SequenceEqual(read[i]), $"round {round}: part-{i} came back with other bytes");
            }
        }

        // Each node was asked for its share, never more than the budget at once (a piece is 1 MiB, within it).
        foreach (var node in cluster.Nodes)
        {
            var peak = client.ReadBudgetOf(node!.NodeId).Peak;
            Assert.InRange(peak, 1, ReadBudget.Default);
        }
    }
}
