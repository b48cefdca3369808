using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Embedded;

namespace Pocket.Controller.Tests;

/// <summary>The controller places each job on one of several metadata servers and the registration names it.</summary>
public sealed class MetadataPlacementTests
{
    [Fact]
    public void TheServerWithFewestJobsThenFewestRequestsIsChosen()
    {
        Assert.Equal(0, MetadataPlane.Choose([new(0, 0), new(0, 0)]));
        Assert.Equal(1, MetadataPlane.Choose([new(2, 0), new(1, 900)]));
        Assert.Equal(2, MetadataPlane.Choose([new(2, 0), new(1, 100), new(1, 50)]));
    }

    [Fact]
    public void TheLeastBusyServerByCpuIsChosenBeforeJobsAndRequests()
    {
        // A tenth of a core apart or more: CPU decides, whatever the jobs.
        Assert.Equal(1, MetadataPlane.Choose([new(0, 0, 0.45), new(5, 900, 0.12)]));

        // Closer than a tenth of a core is noise (and every registration of one second sees the same reading): jobs decide.
        Assert.Equal(1, MetadataPlane.Choose([new(3, 0, 0.01), new(2, 900, 0.05)]));

        // Also across a multiple of a tenth (steps of the CPU put 0.09 and 0.11 a step apart), both ways.
        Assert.Equal(1, MetadataPlane.Choose([new(1, 0, 0.09), new(0, 0, 0.11)]));
        Assert.Equal(0, MetadataPlane.Choose([new(0, 0, 0.19), new(1, 0, 0.21)]));

        // Within a tenth of the least busy, not of each other: 0.25 is too far from 0.10 though close to 0.18.
        Assert.Equal(2, MetadataPlane.Choose([new(0, 0, 0.25), new(2, 0, 0.10), new(1, 0, 0.18)]));

        // A server that must get no job (lost, joining, draining) is never chosen over one that may.
        Assert.Equal(1, MetadataPlane.Choose([MetadataLoad.Full, new(40, 1_000_000, 3.5)]));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task CpuReadingsDecidePlacementOnlyWhenPlacingByCpu(bool placeByCpu)
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = ControllerHarness.NodeCapacity, PreTouchMemory = false, MetadataServers = 2 });

        // No second reading of the servers' load during the test: only the readings set below count.
        await using var controller = await StartControllerAsync(cluster, placeByCpu, TimeSpan.FromHours(1));

        // The first server reads half a core busier (two servers of one process, read a moment apart, can).
        var plane = controller.Registry.Plane;
        plane.SetUsage(cluster.MetadataAddresses[0], new MetadataServerUsage(0.6, 0.3, 0, DateTimeOffset.UtcNow));
        plane.SetUsage(cluster.MetadataAddresses[1], new MetadataServerUsage(0.1, 0.05, 0, DateTimeOffset.UtcNow));
        using var http = Http(controller, cluster);
        var placed = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            placed.Add((await RegisterAsync(http, "cpu")).Metadata);
        }

        // By CPU both go to the idler server; without it the jobs decide: one each, the first on the first server.
        Assert.Equal(placeByCpu ? [cluster.MetadataAddresses[1], cluster.MetadataAddresses[1]] : [cluster.MetadataAddresses[0], cluster.MetadataAddresses[1]], placed);
    }

    [Fact]
    public async Task JobsSpreadOverTwoMetadataServersAndClientsFollowTheRegistration()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 2, NodeCapacity = ControllerHarness.NodeCapacity, PreTouchMemory = false, MetadataServers = 2 });

        // The servers share this process, so each reports all of its CPU: the job count places them in turn.
        await using var controller = await StartControllerAsync(cluster, placeByCpu: false);
        using var http = Http(controller, cluster);
        var registrations = new List<RegisterJobResponse>();
        for (var i = 0; i < 4; i++)
        {
            registrations.Add(await RegisterAsync(http, "spread"));
        }

        // Two jobs on each server, ids unique across the plane.
        Assert.Equal([2, 2], registrations.GroupBy(r => r.Metadata).Select(g => g.Count()).Order());
        Assert.Equal(cluster.MetadataAddresses.Order(), registrations.Select(r => r.Metadata).Distinct().Order());
        Assert.Equal(4, registrations.Select(r => r.JobId).Distinct().Count());

        foreach (var registration in registrations)
        {
            // A client connected to the address the registration names finds the job there, and only there.
            await using var client = await PocketClient.ConnectAsync(registration.Metadata);
            var job = client.OpenJob(registration);
            var data = new byte[3 << 20];
            Random.Shared.NextBytes(data);
            await job.PutAsync("obj", data);
            Assert.Equal(data, await job.GetAsync("obj"));

            var other = cluster.MetadataAddresses.Single(a => a != registration.Metadata);
            await using var elsewhere = await PocketClient.ConnectAsync(other);
            Assert.Throws<ArgumentException>(() => elsewhere.OpenJob(registration));
            await Assert.ThrowsAnyAsync<PocketException>(async () => await elsewhere.OpenJob(registration.JobId, registration.Token).GetAsync("obj"));
        }

        // Deregistration goes to each job's own server: every job's data is freed.
        foreach (var registration in registrations)
        {
            using var response = await http.DeleteAsync($"/v1/jobs/{registration.JobId}");
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        foreach (var address in cluster.MetadataAddresses)
        {
            await using var admin = await PocketClient.ConnectAsync(address, new PocketClientOptions());
            Assert.All(await admin.Admin(cluster.Options.ClusterToken).GetNodesAsync(), n => Assert.Equal(0, n.Used));
        }
    }

    /// <summary>A controller over the cluster's two metadata servers, no provisioner.</summary>
    private static async Task<ControllerServer> StartControllerAsync(PocketCluster cluster, bool placeByCpu, TimeSpan? telemetryInterval = null)
    {
        var options = new ControllerOptions
        {
            MetadataAddress = cluster.MetadataAddresses[0],
            OtherMetadataAddresses = [cluster.MetadataAddresses[1]],
            ClusterToken = cluster.Options.ClusterToken,
            Registry = new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), PlaceByCpu = placeByCpu },
        };
        var controller = new ControllerServer(telemetryInterval is { } interval ? options with { TelemetryInterval = interval } : options, provisioner: null, NullLoggerFactory.Instance);
        await controller.StartAsync();
        return controller;
    }

    private static HttpClient Http(ControllerServer controller, PocketCluster cluster)
    {
        var http = new HttpClient { BaseAddress = controller.Url, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", cluster.Options.ClusterToken.ToString());
        return http;
    }

    private static async Task<RegisterJobResponse> RegisterAsync(HttpClient http, string name)
    {
        using var response = await http.PostAsJsonAsync("/v1/jobs", new { name });
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Created, text);
        return JsonSerializer.Deserialize<RegisterJobResponse>(text, JsonSerializerOptions.Web)!;
    }
}
