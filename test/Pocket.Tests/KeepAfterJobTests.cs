using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;

namespace Pocket.Tests;

public sealed class KeepAfterJobTests
{
    [Fact]
    public async Task KeepAfterJobObjectsOutliveTheJobReadOnlyUntilTheirTimeToLive()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await StartAsync(clock);
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("keep");
        var kept = new byte[300_000];
        Random.Shared.NextBytes(kept);
        await job.PutAsync("scratch", new byte[300_000]);
        await job.PutAsync("result", kept, PutFlags.KeepAfterJob);
        await job.PutAsync("small-result", new byte[] { 7 }, PutFlags.KeepAfterJob);

        var (objects, _) = await cluster.Admin(client).DeregisterJobAsync(job.Id);
        Assert.Equal(1, objects);

        // The job is over: its scratch data is gone, the kept objects stay readable and cannot be added to.
        Assert.Equal(kept, await job.GetAsync("result"));
        Assert.Equal(new byte[] { 7 }, await job.GetAsync("small-result"));
        Assert.False(await job.ExistsAsync("scratch"));
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await job.PutAsync("late", new byte[10]));
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await job.PutAsync("late-big", new byte[300_000]));
        Assert.True((await cluster.Admin(client).GetNodesAsync()).Single().Used >= kept.Length);

        // Past their time to live they are freed with the job's token.
        clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(5));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (true)
        {
            try
            {
                await job.GetAsync("result", cancellationToken: timeout.Token);
                clock.Advance(TimeSpan.FromSeconds(1));
                await Task.Yield();
            }
            catch (PocketUnauthorizedException)
            {
                break;
            }
        }

        Assert.Equal(0, (await cluster.Admin(client).GetNodesAsync()).Single().Used);
    }

    /// <summary>
    /// What a drained metadata server reports before the controller stops it: inline objects hold no node's blocks, so
    /// the server counts them itself. Those of a live job, and those an ended job kept, are held; an ended job's others
    /// are not.
    /// </summary>
    [Fact]
    public async Task TheServerCountsInlineObjectsItStillHoldsWhichNoNodesUseShows()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var cluster = await StartAsync(clock);
        await using var client = await cluster.ConnectAsync();
        var admin = cluster.Admin(client);
        Assert.Equal(0, (await admin.GetServerLoadAsync()).HeldObjects);

        var live = await admin.RegisterJobAsync("live");
        await live.PutAsync("tiny", new byte[] { 1, 2, 3 });
        var ended = await admin.RegisterJobAsync("ended");
        await ended.PutAsync("tiny-scratch", new byte[] { 4 });
        await ended.PutAsync("tiny-result", new byte[] { 5, 6 }, PutFlags.KeepAfterJob);

        var load = await admin.GetServerLoadAsync();
        Assert.Equal(3, load.HeldObjects);
        Assert.Equal(6, load.HeldInlineBytes);
        Assert.Equal(0, (await admin.GetNodesAsync()).Single().Used);

        // The live job ends: nothing of it is held. The other ends too, but its kept object stays until it expires.
        await admin.DeregisterJobAsync(live.Id);
        await admin.DeregisterJobAsync(ended.Id);
        load = await admin.GetServerLoadAsync();
        Assert.Equal(1, load.HeldObjects);
        Assert.Equal(2, load.HeldInlineBytes);
        Assert.Equal(0, (await admin.GetNodesAsync()).Single().Used);

        clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(5));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while ((await admin.GetServerLoadAsync(timeout.Token)).HeldObjects > 0)
        {
            clock.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(10, timeout.Token);
        }

        Assert.Equal(0, (await admin.GetServerLoadAsync()).HeldInlineBytes);
    }

    /// <summary>One 16 MiB node on <paramref name="clock"/>, never declared dead while the clock jumps.</summary>
    private static Task<PocketCluster> StartAsync(FakeTimeProvider clock) => PocketCluster.StartAsync(new PocketClusterOptions
    {
        StorageNodes = 1,
        NodeCapacity = 16 << 20,
        PreTouchMemory = false,
        TimeProvider = clock,
        NodeTimeout = TimeSpan.FromDays(1),
    });
}
