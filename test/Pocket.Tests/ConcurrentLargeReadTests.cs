using Pocket.Admin;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Eight large gets at once through one client, the map phase of `pocket demo`'s sort: each get reads 8 pieces of
/// 1 MiB at a time, so one node was asked for 20-26 MB of replies at once, past its bound for a client that stops
/// reading (16 MiB), and closed the connection mid-read ("object lost"). The client now keeps what it asks a node for
/// within a budget; every get must return its bytes.
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
    }
}
