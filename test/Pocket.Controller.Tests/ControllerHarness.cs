using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>
/// A real in-process cluster (metadata server + storage nodes of 256 MiB on loopback) with a real controller on
/// port 0 in front of it, an HttpClient for its API and an admin PocketClient.
/// </summary>
internal sealed class ControllerHarness : IAsyncDisposable
{
    public const long NodeCapacity = 256L << 20;

    private ControllerHarness(PocketCluster cluster, ControllerServer controller, HttpClient http, PocketClient client)
    {
        Cluster = cluster;
        Controller = controller;
        Http = http;
        Client = client;
    }

    public PocketCluster Cluster { get; }

    public ControllerServer Controller { get; }

    public HttpClient Http { get; }

    public PocketClient Client { get; }

    public JobRegistry Registry => Controller.Registry;

    /// <summary>Node classes sized like the in-process nodes, so sizing and the nodes it starts agree.</summary>
    public static SizingOptions Sizing(int minimumNodes = 2) => new()
    {
        MinimumNodes = minimumNodes,
        NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = NodeCapacity }],
    };

    public static async Task<ControllerHarness> StartAsync(int nodes = 2, JobRegistryOptions? registry = null, bool provisioner = true)
    {
        var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = nodes, NodeCapacity = NodeCapacity, PreTouchMemory = false });
        var controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = cluster.MetadataAddress,
                ClusterToken = cluster.Options.ClusterToken,
                Registry = registry ?? new JobRegistryOptions { Sizing = Sizing() },
            },
            provisioner ? new InProcessProvisioner(cluster) : null,
            NullLoggerFactory.Instance);
        await controller.StartAsync();
        var http = new HttpClient { BaseAddress = controller.Url, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", cluster.Options.ClusterToken.ToString());
        var client = await cluster.ConnectAsync();
        return new ControllerHarness(cluster, controller, http, client);
    }

    /// <summary>POST /v1/jobs with <paramref name="body"/>; asserts 201 and returns the answer.</summary>
    public async Task<RegisterJobResponse> RegisterAsync(object body)
    {
        using var response = await Http.PostAsJsonAsync("/v1/jobs", body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Created, $"{(int)response.StatusCode}: {text}");
        return JsonSerializer.Deserialize<RegisterJobResponse>(text, JsonSerializerOptions.Web)!;
    }

    /// <summary>The job as a data-plane handle, with the token the controller returned.</summary>
    public PocketJob Open(RegisterJobResponse job)
    {
        Assert.False(job.Token.IsNone);
        return Client.OpenJob(job.JobId, job.Token);
    }

    /// <summary>Bytes stored on live nodes, from the metadata server.</summary>
    public async Task<long> UsedBytesAsync() => (await Cluster.Admin(Client).GetNodesAsync()).Where(n => n.State == NodeState.Live).Sum(n => n.Used);

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Client.DisposeAsync();
        await Controller.DisposeAsync();
        await Cluster.DisposeAsync();
    }
}
