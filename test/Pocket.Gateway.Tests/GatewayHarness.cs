using System.Net.Http.Json;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.S3;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Gateway.Tests;

/// <summary>
/// A real in-process cluster (metadata server + two 256 MiB DRAM nodes on loopback), a real controller and a real
/// S3 gateway, both on port 0, and AWS SDK clients pointed at the gateway.
/// </summary>
internal sealed class GatewayHarness : IAsyncDisposable
{
    public const long NodeCapacity = 256L << 20;
    public const string AccessKey = "AKIDPOCKETTEST";
    public const string SecretKey = "pocket/secret+key/for-tests";
    public const string OtherAccessKey = "AKIDPOCKETOTHER";
    public const string OtherSecretKey = "another-secret";

    private GatewayHarness(PocketCluster cluster, ControllerServer controller, GatewayServer gateway, string stateDirectory)
    {
        Cluster = cluster;
        Controller = controller;
        Gateway = gateway;
        StateDirectory = stateDirectory;
        ControllerHttp = new HttpClient { BaseAddress = controller.Url, Timeout = TimeSpan.FromSeconds(60) };
        ControllerHttp.DefaultRequestHeaders.Authorization = new("Bearer", cluster.Options.ClusterToken.ToString());
        S3 = Client(AccessKey, SecretKey);
    }

    public PocketCluster Cluster { get; }

    public ControllerServer Controller { get; }

    public GatewayServer Gateway { get; private set; }

    public string StateDirectory { get; }

    public HttpClient ControllerHttp { get; }

    public AmazonS3Client S3 { get; private set; }

    /// <summary>Starts it all; with <paramref name="metadataServers"/> over 1 the controller places buckets on them in turn.</summary>
    public static async Task<GatewayHarness> StartAsync(int metadataServers = 1)
    {
        var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 2, NodeCapacity = NodeCapacity, PreTouchMemory = false, MetadataServers = metadataServers });
        var controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = cluster.MetadataAddress,
                OtherMetadataAddresses = [.. cluster.MetadataAddresses.Skip(1)],
                ClusterToken = cluster.Options.ClusterToken,
                Registry = new JobRegistryOptions
                {
                    // The servers share this process, so each reports all of its CPU: the job count places them in turn.
                    PlaceByCpu = false,
                    Sizing = new SizingOptions { MinimumNodes = 2, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = NodeCapacity }] },
                },
            },
            new InProcessProvisioner(cluster),
            NullLoggerFactory.Instance);
        await controller.StartAsync();
        var state = Path.Combine(Path.GetTempPath(), "pocket-gateway-tests", Guid.NewGuid().ToString("N"));
        var gateway = new GatewayServer(Options(controller.Url, state, cluster.Options.ClusterToken), NullLoggerFactory.Instance);
        await gateway.StartAsync();
        return new GatewayHarness(cluster, controller, gateway, state);
    }

    public static GatewayOptions Options(Uri controllerUrl, string stateDirectory, JobToken clusterToken) => new()
    {
        ControllerUrl = controllerUrl,
        ClusterToken = clusterToken,
        StateDirectory = stateDirectory,
        Users = new Dictionary<string, string> { [AccessKey] = SecretKey, [OtherAccessKey] = OtherSecretKey },

        // Small minimum part size keeps multipart tests light; the 5 MiB default is S3's.
        MinPartSize = 1 << 20,
    };

    /// <summary>An SDK client for the gateway, path-style, signing for us-east-1.</summary>
    public AmazonS3Client Client(string accessKey, string secretKey) => new(
        new BasicAWSCredentials(accessKey, secretKey),
        new AmazonS3Config
        {
            ServiceURL = Gateway.Url.ToString(),
            ForcePathStyle = true,
            AuthenticationRegion = "us-east-1",
            MaxErrorRetry = 1,
            Timeout = TimeSpan.FromSeconds(120),
        });

    /// <summary>Stops the gateway and starts a new one on the same state directory (a gateway restart).</summary>
    public async Task RestartGatewayAsync()
    {
        S3.Dispose();
        await Gateway.DisposeAsync();
        Gateway = new GatewayServer(Options(Controller.Url, StateDirectory, Cluster.Options.ClusterToken), NullLoggerFactory.Instance);
        await Gateway.StartAsync();
        S3 = Client(AccessKey, SecretKey);
    }

    /// <summary>A fresh bucket name; each test uses its own buckets.</summary>
    public static string NewBucketName(string stem) => $"{stem}-{Guid.NewGuid().ToString("N")[..10]}";

    public async Task<JsonElement> GetJobAsync(string jobId)
    {
        var json = await ControllerHttp.GetFromJsonAsync<JsonElement>($"/v1/jobs/{jobId}");
        return json;
    }

    public async ValueTask DisposeAsync()
    {
        S3.Dispose();
        ControllerHttp.Dispose();
        await Gateway.DisposeAsync();
        await Controller.DisposeAsync();
        await Cluster.DisposeAsync();
        try
        {
            Directory.Delete(StateDirectory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

/// <summary>One cluster + controller + gateway shared by the tests of a class; every test makes its own buckets.</summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    internal GatewayHarness Harness { get; private set; } = null!;

    public async Task InitializeAsync() => Harness = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await Harness.DisposeAsync();
}
