using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Cli.Commands;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket bench --job` keeps the job's lease alive: one request of the job per interval on a fake clock, counted by
/// the real metadata server, and none once the bench is done.
/// </summary>
public sealed class LeaseKeeperTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task RenewsOncePerIntervalAndStopsWhenDisposed()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16L << 20 });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("bench-lease", NodeTier.Dram);
        var time = new FakeTimeProvider();
        var interval = TimeSpan.FromSeconds(30);
        var renewed = new SemaphoreSlim(0);

        var keeper = LeaseKeeper.Start(job, "bench-x/", interval, time);
        keeper.Renewed += () => renewed.Release();
        var before = (await job.GetUsageAsync()).Requests;

        time.Advance(interval - TimeSpan.FromSeconds(1));
        Assert.Equal(0, keeper.Renewals);
        for (var i = 1; i <= 2; i++)
        {
            time.Advance(i == 1 ? TimeSpan.FromSeconds(1) : interval);
            Assert.True(await renewed.WaitAsync(Wait), $"renewal {i} did not come");
            Assert.Equal(i, keeper.Renewals);
            Assert.Equal(before + i, (await job.GetUsageAsync()).Requests);
        }

        await keeper.DisposeAsync();
        time.Advance(interval * 3);
        Assert.Equal(2, keeper.Renewals);
        Assert.Equal(before + 2, (await job.GetUsageAsync()).Requests);
    }
}
