using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// The controller scales the metadata plane on its band: real `pocket metadata` and `pocket storage` children started
/// through the provisioner as `pocket up` starts them, the controller on a fake clock. Load above the band starts a
/// server at the spare address, which the nodes join and new jobs go to; below the band it drains: new jobs avoid it,
/// it is stopped after its last job ends and its shares return to the first server; no job is lost either way.
/// </summary>
public sealed class MetadataScalingTests
{
    private const long NodeCapacity = 64L << 20;

    [Fact]
    public async Task LoadAboveTheBandAddsAMetadataServerAndBelowItTheServerDrainsAndStopsAfterItsLastJob()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var spare = ProcessCluster.FreeLoopbackAddress();
        await using var cluster = await ProcessCluster.StartAsync(
            new ProcessClusterOptions
            {
                NodeCapacity = NodeCapacity,
                SpareMetadataAddresses = [spare],

                // The job request rate decides here (the test makes it: a loop of requests, then none); the CPU band is
                // out of reach both ways so a loaded test machine cannot decide for it.
                Controller = options => options with
                {
                    MetadataScaling = new MetadataScalingOptions
                    {
                        SpareAddresses = [spare],
                        RequestsLow = 50,
                        RequestsHigh = 200,
                        CpuLow = 15,
                        CpuHigh = 16,
                        UpAfter = TimeSpan.FromSeconds(2),
                        Cooldown = TimeSpan.FromSeconds(10),
                    },
                },
            },
            cts.Token);
        var controller = cluster.Controller;
        var first = cluster.Metadata[0];
        var whole = await cluster.WaitForNodesAsync(first.Address, 2, null, cts.Token);

        var busy = await controller.Registry.RegisterAsync("busy", new JobHints(), cts.Token);
        Assert.Equal(first.Address, busy.MetadataAddress);
        await using var busyClient = await PocketClient.ConnectAsync(busy.MetadataAddress!, cancellationToken: cts.Token);
        var busyJob = busyClient.OpenJob(busy.Id, busy.Token);
        var large = ProcessCluster.RandomBytes(3 << 20);
        await busyJob.PutAsync("large", large, cancellationToken: cts.Token);
        await busyJob.PutAsync("small", ProcessCluster.RandomBytes(100), cancellationToken: cts.Token);

        // Thousands of requests a second against a band of 200: the plane scales up, and the new server takes jobs once
        // both nodes have joined it (they knew its address from their start).
        using (var stopLoad = CancellationTokenSource.CreateLinkedTokenSource(cts.Token))
        {
            var load = Task.Run(
                async () =>
                {
                    while (!stopLoad.IsCancellationRequested)
                    {
                        await busyJob.LookupAsync("small", stopLoad.Token);
                    }
                },
                CancellationToken.None);
            await cluster.AdvanceUntilAsync(e => e.Kind == "metadata-serving", cts.Token);
            await stopLoad.CancelAsync();
            await load.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }

        var events = cluster.Events;
        var up = Assert.Single(events, e => e.Kind == "metadata-scale-up");
        Assert.Contains("req/s", up.Reason, StringComparison.Ordinal);
        Assert.Contains(spare, up.Reason, StringComparison.Ordinal);
        Assert.Equal(2, cluster.Provisioner.MetadataServers.Count);

        // A new job goes to the new server (the least loaded), and its data goes through its share of the nodes.
        var fresh = await controller.Registry.RegisterAsync("fresh", new JobHints(), cts.Token);
        Assert.Equal(spare, fresh.MetadataAddress);
        await using var freshClient = await PocketClient.ConnectAsync(fresh.MetadataAddress!, cancellationToken: cts.Token);
        var freshJob = freshClient.OpenJob(fresh.Id, fresh.Token);
        await freshJob.PutAsync("large", large, cancellationToken: cts.Token);
        Assert.Equal(large, await freshJob.GetAsync("large", cancellationToken: cts.Token));

        using (var api = new PocketControllerClient(controller.Url, cluster.Token))
        {
            var view = await api.GetClusterAsync(cts.Token);
            Assert.Equal([first.Address, spare], view.MetadataServers!.Select(s => s.Address));
            Assert.All(view.MetadataServers!, s => Assert.Equal("serving", s.State));
            var busiest = view.MetadataServers![0];
            Assert.True(busiest.Cpu is >= 0, "the first server reports its CPU");
        }

        // No more load: after the cooldown below the band, the server the controller started drains. New jobs avoid it.
        await cluster.AdvanceUntilAsync(e => e.Kind == "metadata-draining", cts.Token);
        var draining = Assert.Single(cluster.Events, e => e.Kind == "metadata-draining");
        Assert.Contains(spare, draining.Reason, StringComparison.Ordinal);
        var later = await controller.Registry.RegisterAsync("later", new JobHints(), cts.Token);
        Assert.Equal(first.Address, later.MetadataAddress);

        // It still holds a job: it keeps running, and the job keeps working.
        for (var i = 0; i < 5; i++)
        {
            cluster.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(100, cts.Token);
        }

        Assert.DoesNotContain(cluster.Events, e => e.Kind == "metadata-stopped");
        Assert.Equal(2, cluster.Provisioner.MetadataServers.Count);
        Assert.Equal(large, await freshJob.GetAsync("large", cancellationToken: cts.Token));

        // Its last job ends: it is stopped, and the nodes give its segments back to the first server.
        await controller.Registry.DeregisterAsync(fresh.Id, cts.Token);
        await cluster.AdvanceUntilAsync(e => e.Kind == "metadata-stopped", cts.Token);
        await controller.MetadataScaling;
        Assert.Contains(spare, Assert.Single(cluster.Events, e => e.Kind == "metadata-stopped").Reason, StringComparison.Ordinal);
        Assert.True(cluster.Provisioner.MetadataServers.Count == 1, string.Join("\n", cluster.Events.Select(e => $"{e.Kind}: {e.Reason}")) + "\n" + string.Join(", ", cluster.Provisioner.MetadataServers));
        Assert.Equal(first.Address, Assert.Single(cluster.Provisioner.MetadataServers).Address);
        Assert.Equal(whole, await cluster.WaitForNodesAsync(first.Address, 2, whole, cts.Token));

        // No job was lost in either direction: the first server's jobs have every byte and keep writing.
        Assert.DoesNotContain(cluster.Events, e => e.Kind is "metadata-lost" or "metadata-scale-failed");
        Assert.NotNull(controller.Registry.Find(busy.Id));
        Assert.NotNull(controller.Registry.Find(later.Id));
        Assert.Equal(large, await busyJob.GetAsync("large", cancellationToken: cts.Token));
        await using var laterClient = await PocketClient.ConnectAsync(later.MetadataAddress!, cancellationToken: cts.Token);
        var laterJob = laterClient.OpenJob(later.Id, later.Token);
        await laterJob.PutAsync("large", large, cancellationToken: cts.Token);
        Assert.Equal(large, await laterJob.GetAsync("large", cancellationToken: cts.Token));
    }
}
