using System.Diagnostics;
using System.Globalization;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// A metadata server killed with SIGKILL loses only its own jobs: two real `pocket metadata` children and two real
/// `pocket storage` children, started through the controller's provisioner as `pocket up` does; the controller (on a
/// fake clock) notices the death, ends the server's jobs as lost and starts a replacement at its address.
/// </summary>
public sealed class MetadataLossTests
{
    private const long NodeCapacity = 64L << 20;

    [Fact]
    public async Task HealthIsDegradedNamingAKilledMetadataServerUntilItsReplacementServes()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await using var cluster = await ProcessCluster.StartAsync(new ProcessClusterOptions { MetadataServers = 2, StorageNodes = 0 }, cts.Token);
        var second = cluster.Metadata[1];
        using var api = new PocketControllerClient(cluster.Controller.Url, cluster.Token);
        var healthy = await api.GetHealthAsync(cts.Token);
        Assert.True(healthy.IsHealthy, healthy.ToString());
        Assert.Null(healthy.MetadataDown);

        var killedAt = cluster.Time.GetUtcNow();
        using (var victim = Process.GetProcessById(cluster.Provisioner.MetadataProcessId(second) ?? throw new InvalidOperationException("no process")))
        {
            victim.Kill();
            await victim.WaitForExitAsync(cts.Token);
        }

        // Before any probe: the read finds it down. Still 200 (the controller serves on the first server), naming it.
        using (var http = new HttpClient { BaseAddress = cluster.Controller.Url })
        using (var raw = await http.GetAsync(new Uri("healthz", UriKind.Relative), cts.Token))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, raw.StatusCode);
        }

        var degraded = await api.GetHealthAsync(cts.Token);
        Assert.True(degraded.IsDegraded, degraded.ToString());
        var down = Assert.Single(degraded.MetadataDown!);
        Assert.Equal(second.Address, down.Address);
        Assert.Equal("not answering", down.State);
        Assert.True(down.Since >= killedAt, $"down since {down.Since:O}, killed at {killedAt:O}");
        Assert.Contains(second.Address, degraded.Error, StringComparison.Ordinal);

        // The probes (on the fake clock) declare it lost: degraded since the first failed probe, while lost or replaced.
        var firstProbeFailure = DateTimeOffset.MaxValue;
        while (!cluster.Events.Any(e => e.Kind == "metadata-lost"))
        {
            cluster.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(300, cts.Token);
            if ((await api.GetHealthAsync(cts.Token)).MetadataDown?.SingleOrDefault() is { State: "not answering" } failing && failing.Since > killedAt)
            {
                firstProbeFailure = failing.Since < firstProbeFailure ? failing.Since : firstProbeFailure;
            }
        }

        // Lost, or already replaced: the replacement starts at once and may serve before this read (it did in one
        // run); only then is the health ok.
        var lost = await api.GetHealthAsync(cts.Token);
        if (lost.IsDegraded)
        {
            var stillDown = Assert.Single(lost.MetadataDown!);
            Assert.Equal(second.Address, stillDown.Address);
            Assert.Contains(stillDown.State, new[] { "lost", "replacing" });
            Assert.True(stillDown.Since <= firstProbeFailure && stillDown.Since >= killedAt, $"since {stillDown.Since:O}");
        }
        else
        {
            Assert.True(lost.IsHealthy, lost.ToString());
            await cluster.Controller.MetadataReplacements;
        }

        // Its replacement serves: ok again.
        await cluster.Controller.MetadataReplacements;
        Assert.Contains(cluster.Events, e => e.Kind == "metadata-replaced");
        var again = await api.GetHealthAsync(cts.Token);
        Assert.True(again.IsHealthy, again.ToString());
        Assert.Null(again.MetadataDown);
    }

    [Fact]
    public async Task AKilledMetadataServerLosesOnlyItsJobsAndIsReplaced()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await using var cluster = await ProcessCluster.StartAsync(new ProcessClusterOptions { MetadataServers = 2, NodeCapacity = NodeCapacity }, cts.Token);
        var controller = cluster.Controller;
        var token = cluster.Token;
        var first = cluster.Metadata[0];
        var second = cluster.Metadata[1];

        // Every node has registered with both servers before jobs are placed (each then lists both nodes live).
        await cluster.WaitForNodesAsync(first.Address, 2, null, cts.Token);
        await cluster.WaitForNodesAsync(second.Address, 2, null, cts.Token);

        // Fewest jobs first: the two jobs land on different servers.
        var kept = await controller.Registry.RegisterAsync("kept", new JobHints(), cts.Token);
        var doomed = await controller.Registry.RegisterAsync("doomed", new JobHints(), cts.Token);
        Assert.Equal(first.Address, kept.MetadataAddress);
        Assert.Equal(second.Address, doomed.MetadataAddress);

        await using var keptClient = await PocketClient.ConnectAsync(kept.MetadataAddress!, cancellationToken: cts.Token);
        await using var doomedClient = await PocketClient.ConnectAsync(doomed.MetadataAddress!, cancellationToken: cts.Token);
        var keptJob = keptClient.OpenJob(kept.Id, kept.Token);
        var doomedJob = doomedClient.OpenJob(doomed.Id, doomed.Token);
        var small = ProcessCluster.RandomBytes(1000);
        var large = ProcessCluster.RandomBytes(3 << 20);
        foreach (var job in new[] { keptJob, doomedJob })
        {
            await job.PutAsync("small", small, cancellationToken: cts.Token);
            await job.PutAsync("large", large, cancellationToken: cts.Token);
        }

        using (var victim = Process.GetProcessById(cluster.Provisioner.MetadataProcessId(second) ?? throw new InvalidOperationException("no process")))
        {
            victim.Kill();
            await victim.WaitForExitAsync(cts.Token);
        }

        // The lost job's client, mid-use, gets JobLost once the controller (its probes on the fake clock) has declared
        // the server lost and the replacement answers at the same address: not a hang, not a bare connection error.
        var lostRead = doomedJob.GetAsync("large", cancellationToken: cts.Token).AsTask();
        while (!lostRead.IsCompleted)
        {
            cluster.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.WhenAny(lostRead, Task.Delay(100, cts.Token));
        }

        var lost = await Assert.ThrowsAsync<PocketJobLostException>(() => lostRead);
        Assert.Equal(Status.JobLost, lost.Status);
        Assert.Contains($"job {doomed.Id} was lost", lost.Message, StringComparison.Ordinal);
        Assert.Contains("its metadata server was lost at", lost.Message, StringComparison.Ordinal);
        Assert.Contains("register the job again", lost.Message, StringComparison.Ordinal);

        await controller.MetadataReplacements;
        var events = controller.Events.Last(100);
        var lostEvent = Assert.Single(events, e => e.Kind == "metadata-lost");
        Assert.Contains(second.Address, lostEvent.Reason, StringComparison.Ordinal);
        Assert.Contains(doomed.Id, lostEvent.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain(kept.Id, lostEvent.Reason, StringComparison.Ordinal);
        Assert.Contains(events, e => e.Kind == "metadata-replaced" && e.Reason.Contains(second.Address, StringComparison.Ordinal));
        Assert.DoesNotContain(events, e => e.Kind == "metadata-replace-failed");
        Assert.Null(controller.Registry.Find(doomed.Id));
        Assert.NotNull(controller.Registry.Find(kept.Id));

        // A fresh client of the lost job is told the same, on every kind of request.
        await using (var fresh = await PocketClient.ConnectAsync(second.Address, cancellationToken: cts.Token))
        {
            var again = fresh.OpenJob(doomed.Id, doomed.Token);
            await Assert.ThrowsAsync<PocketJobLostException>(async () => await again.GetAsync("small", cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketJobLostException>(async () => await again.PutAsync("new", small, cancellationToken: cts.Token));
        }

        // The other job never noticed: every byte is there, and it keeps writing.
        Assert.Equal(small, await keptJob.GetAsync("small", cancellationToken: cts.Token));
        Assert.Equal(large, await keptJob.GetAsync("large", cancellationToken: cts.Token));
        await keptJob.PutAsync("after", large, cancellationToken: cts.Token);
        Assert.Equal(large, await keptJob.GetAsync("after", cancellationToken: cts.Token));

        // The nodes join the replacement by themselves and hand it a share; a new job is placed on it and works.
        await cluster.WaitForNodesAsync(second.Address, 2, null, cts.Token);
        var fresh2 = await controller.Registry.RegisterAsync("fresh", new JobHints(), cts.Token);
        Assert.Equal(second.Address, fresh2.MetadataAddress);
        Assert.NotEqual(doomed.Id, fresh2.Id);
        await using var freshClient = await PocketClient.ConnectAsync(fresh2.MetadataAddress!, cancellationToken: cts.Token);
        var freshJob = freshClient.OpenJob(fresh2.Id, fresh2.Token);
        await freshJob.PutAsync("large", large, cancellationToken: cts.Token);
        Assert.Equal(large, await freshJob.GetAsync("large", cancellationToken: cts.Token));
        Assert.Equal(large, await keptJob.GetAsync("after", cancellationToken: cts.Token));

        // Exact accounting: each node's shares on the two servers add up to the whole node, with no segment on both.
        await using var firstAdmin = await PocketClient.ConnectAsync(first.Address, cancellationToken: cts.Token);
        await using var secondAdmin = await PocketClient.ConnectAsync(second.Address, cancellationToken: cts.Token);
        var onFirst = await firstAdmin.Admin(token).GetNodesAsync(cts.Token);
        var onSecond = await secondAdmin.Admin(token).GetNodesAsync(cts.Token);
        foreach (var node in onFirst)
        {
            var other = Assert.Single(onSecond, n => n.Id == node.Id);
            Assert.True(node.Capacity + other.Capacity <= NodeCapacity, string.Create(CultureInfo.InvariantCulture, $"node {node.Id}: {node.Capacity} + {other.Capacity} > {NodeCapacity}"));
            Assert.True(other.Capacity > 0, $"node {node.Id} gave the replacement no share");
        }

        Assert.Equal(2, cluster.Provisioner.MetadataServers.Count);
    }
}
