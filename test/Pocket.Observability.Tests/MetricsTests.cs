using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Gateway;
using Pocket.Metadata;
using Pocket.Metrics;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.StorageServer;
using Prometheus;

namespace Pocket.Observability.Tests;

/// <summary>
/// Every role's /metrics, scraped over real sockets from real servers, checked with Prometheus's own parser
/// (promtool) and against known activity: a put moves its counters by exactly one.
/// </summary>
public sealed class MetricsTests
{
    private static readonly JobToken Token = JobToken.NewRandom();

    [Fact]
    public async Task ProtocolRolesCountAPutAndAGetExactlyOnceAndTheirExpositionParses()
    {
        await using var roles = await RolesAsync();
        await using var client = await PocketClient.ConnectAsync(roles.MetadataAddress, new PocketClientOptions());
        var job = await client.Admin(Token).RegisterJobAsync("metrics");

        var metadataBefore = await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString());
        var storageBefore = await Exposition.ScrapeAsync(roles.StorageMetrics, Token.ToString());

        var small = new byte[1024];
        Random.Shared.NextBytes(small);
        await job.PutAsync("small", small);
        Assert.Equal(small, await job.GetAsync("small"));

        var large = new byte[1 << 20];
        Random.Shared.NextBytes(large);
        await job.PutAsync("large", large);

        var metadata = await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString());
        var storage = await Exposition.ScrapeAsync(roles.StorageMetrics, Token.ToString());
        double Delta(string before, string after, string series) => Exposition.ValueOrZero(after, series) - Exposition.ValueOrZero(before, series);

        Assert.Equal(1, Delta(metadataBefore, metadata, "pocket_metadata_requests_total{opcode=\"put_small\",status=\"ok\"}"));
        Assert.Equal(1, Delta(metadataBefore, metadata, "pocket_metadata_request_duration_seconds_count{opcode=\"put_small\"}"));
        Assert.Equal(1, Delta(metadataBefore, metadata, "pocket_metadata_requests_total{opcode=\"get\",status=\"ok\"}"));
        Assert.Equal(1, Delta(metadataBefore, metadata, "pocket_metadata_requests_total{opcode=\"create\",status=\"ok\"}"));
        Assert.Equal(1, Delta(metadataBefore, metadata, "pocket_metadata_requests_total{opcode=\"commit\",status=\"ok\"}"));
        Assert.Equal(2, Delta(metadataBefore, metadata, "pocket_metadata_objects"));
        Assert.Equal(1024, Delta(metadataBefore, metadata, "pocket_metadata_inline_bytes"));
        Assert.Equal(1, Exposition.Value(metadata, "pocket_metadata_jobs"));
        Assert.Equal(1, Exposition.Value(metadata, "pocket_metadata_nodes{tier=\"dram\",state=\"live\"}"));
        Assert.Equal(64L << 20, Exposition.Value(metadata, "pocket_metadata_capacity_bytes{tier=\"dram\"}"));
        Assert.Equal(1L << 20, Exposition.Value(metadata, "pocket_metadata_used_bytes{tier=\"dram\"}"));

        // The large object's bytes went to the node in write requests, all answered ok.
        Assert.True(Delta(storageBefore, storage, "pocket_storage_requests_total{opcode=\"write_extent\",status=\"ok\"}") >= 1);
        Assert.Equal(1L << 20, Delta(storageBefore, storage, "pocket_storage_written_bytes_total"));
        Assert.True(Delta(storageBefore, storage, "pocket_storage_network_receive_bytes_total") >= 1L << 20);
        Assert.Equal(64L << 20, Exposition.Value(storage, "pocket_storage_capacity_bytes"));

        // An error is counted by its status: a get of a missing key.
        await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync("missing"));
        var afterError = await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString());
        Assert.Equal(1, Delta(metadata, afterError, "pocket_metadata_requests_total{opcode=\"get\",status=\"not_found\"}"));
        Assert.Equal(0, Delta(metadata, afterError, "pocket_metadata_requests_total{opcode=\"get\",status=\"ok\"}"));
    }

    /// <summary>
    /// A client that asks for 32 MB of replies on one connection before it reads one: the metadata server holds its
    /// requests back (backpressure) and says so in <c>pocket_metadata_reply_pauses_total</c>; every reply then arrives.
    /// </summary>
    [Fact]
    public async Task AClientThatLetsItsRepliesWaitIsCountedAsPaused()
    {
        const int gets = 1000;
        const int size = 32 << 10;
        await using var roles = await RolesAsync();
        await using var client = await PocketClient.ConnectAsync(roles.MetadataAddress, new PocketClientOptions());
        var job = await client.Admin(Token).RegisterJobAsync("slow-reader");
        await job.PutAsync("a", new byte[size]);
        var before = await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString());
        Assert.Equal(0, Exposition.ValueOrZero(before, "pocket_metadata_stalled_readers_total"));

        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, roles.Metadata!.EndPoint.Port));
        var get = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
        var burst = new byte[gets * (FrameHeader.Size + get.Length)];
        for (var i = 0; i < gets; i++)
        {
            var at = i * (FrameHeader.Size + get.Length);
            new FrameHeader(Opcode.Get, FrameFlags.None, Status.Ok, get.Length, (uint)i, job.Token).Write(burst.AsSpan(at));
            get.CopyTo(burst, at + FrameHeader.Size);
        }

        await socket.SendAsync(burst);
        await WaitForAsync(async () => Exposition.ValueOrZero(await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString()), "pocket_metadata_reply_pauses_total") > 0);

        using var stream = new NetworkStream(socket);
        using var patience = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var header = new byte[FrameHeader.Size];
        var body = new byte[size + 64];
        for (var i = 0; i < gets; i++)
        {
            await stream.ReadExactlyAsync(header, patience.Token);
            Assert.Equal(Status.Ok, FrameHeader.TryRead(header, int.MaxValue, out var reply));
            Assert.Equal(Status.Ok, reply.Status);
            Assert.Equal((uint)i, reply.RequestId);
            await stream.ReadExactlyAsync(body.AsMemory(0, reply.BodyLength), patience.Token);
        }

        var after = await Exposition.ScrapeAsync(roles.MetadataMetrics, Token.ToString());
        Assert.Equal(0, Exposition.ValueOrZero(after, "pocket_metadata_stalled_readers_total"));
    }

    [Fact]
    public async Task MetricsNeedTheClusterTokenAndTheListenerServesNothingElse()
    {
        await using var roles = await RolesAsync();
        Assert.Equal(401, await Exposition.StatusWithoutTokenAsync(roles.MetadataMetrics, null));
        Assert.Equal(401, await Exposition.StatusWithoutTokenAsync(roles.StorageMetrics, JobToken.NewRandom().ToString()));
        Assert.Equal(404, await Exposition.StatusWithoutTokenAsync(new Uri(roles.MetadataMetrics, "/other"), Token.ToString()));

        // The roles kept serving.
        await using var client = await PocketClient.ConnectAsync(roles.MetadataAddress, new PocketClientOptions());
        var job = await client.Admin(Token).RegisterJobAsync("after");
        await job.PutAsync("k", new byte[10]);
        Assert.Equal(10, (await job.GetAsync("k")).Length);
    }

    [Fact]
    public async Task AMetricsListenerWithTheRolesCertificateAnswersOnlyHttpsThatTrustsIt()
    {
        using var certificate = SelfSigned();
        var registry = Prometheus.Metrics.NewCustomRegistry();
        _ = RoleCollectors.Metadata(registry, () => null);
        await using var listener = await MetricsListener.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), registry, Token, NullLoggerFactory.Instance, certificate);
        Assert.Equal("https", listener.Url.Scheme);
        var https = new Uri(listener.Url, MetricsEndpoint.Path);

        // Plain HTTP to the TLS port: no metrics, no token accepted in the clear.
        var plain = new UriBuilder(https) { Scheme = "http" }.Uri;
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => Exposition.ScrapeAsync(plain, Token.ToString()));

        // HTTPS that does not trust the certificate: refused by the client.
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => Exposition.ScrapeAsync(https, Token.ToString()));

        // HTTPS trusting the certificate (as Prometheus with tls_config.ca_file): the exposition, checked by promtool.
        using var trusting = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, presented, _, _) => presented is not null && presented.RawData.AsSpan().SequenceEqual(certificate.RawData),
        };
        var text = await Exposition.ScrapeAsync(https, Token.ToString(), trusting);
        Assert.Contains("# TYPE pocket_metadata_requests_total counter", text, StringComparison.Ordinal);

        // The token is still needed over TLS.
        using var http = new HttpClient(trusting, disposeHandler: false);
        using var refused = await http.GetAsync(https);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=pocket-metrics-test", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));

        // Through PKCS#12 so the key is usable by the TLS stack on every platform.
        return X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pkcs12), null);
    }

    [Fact]
    public async Task ControllerAndGatewayServeMetricsBehindTheClusterToken()
    {
        await using var roles = await RolesAsync();
        await using var controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = roles.MetadataAddress,
                ClusterToken = Token,
                MetricsTopJobs = 1,
                Registry = new JobRegistryOptions { Sizing = new SizingOptions { MinimumNodes = 1, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = 64L << 20 }] } },
            },
            null,
            NullLoggerFactory.Instance);
        await controller.StartAsync();
        await using var gateway = await StartGatewayAsync(controller.Url, roles.MetadataAddress);

        await controller.Registry.RegisterAsync("first", new JobHints { CapacityBytes = 1 << 20 });
        await controller.Registry.RegisterAsync("second", new JobHints { CapacityBytes = 1 << 20 });

        var controllerMetrics = new Uri(controller.Url, "/metrics");
        Assert.Equal(401, await Exposition.StatusWithoutTokenAsync(controllerMetrics, null));
        var text = await Exposition.ScrapeAsync(controllerMetrics, Token.ToString());
        Assert.Equal(2, Exposition.Value(text, "pocket_controller_jobs"));
        Assert.Contains("pocket_controller_nodes{tier=\"dram\",state=\"live\"}", text);

        // One of the two jobs has its own series (top 1); the other is folded into _other once metered.
        // (_other is there from the first scrape, before any job is metered: wait for a job's own series too.)
        static int JobSeries(string exposition) => exposition.Split('\n').Count(l => l.StartsWith("pocket_controller_job_stored_bytes{", StringComparison.Ordinal));
        await WaitForAsync(async () => JobSeries(await Exposition.ScrapeAsync(controllerMetrics, Token.ToString())) == 2);
        text = await Exposition.ScrapeAsync(controllerMetrics, Token.ToString());
        Assert.Equal(2, JobSeries(text));

        // The gateway: a scrape carries a bearer token; an S3 request to /metrics (bucket "metrics") is S3, and counted.
        var gatewayMetrics = new Uri(gateway.Url, "/metrics");
        Assert.Equal(401, await Exposition.StatusWithoutTokenAsync(gatewayMetrics, JobToken.NewRandom().ToString()));
        var before = await Exposition.ScrapeAsync(gatewayMetrics, Token.ToString());
        var anonymous = await Exposition.StatusWithoutTokenAsync(gatewayMetrics, null);
        Assert.Equal(403, anonymous);
        var after = await Exposition.ScrapeAsync(gatewayMetrics, Token.ToString());
        Assert.Equal(1, Exposition.ValueOrZero(after, "pocket_gateway_requests_total{method=\"GET\",code=\"403\"}") - Exposition.ValueOrZero(before, "pocket_gateway_requests_total{method=\"GET\",code=\"403\"}"));
    }

    [Fact]
    public async Task TheControllerCountsScalingDecisionsByReasonAndEveryByteADrainMoved()
    {
        const long nodeCapacity = 64L << 20;
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = nodeCapacity, PreTouchMemory = false, NodeTimeout = TimeSpan.FromMinutes(5) });
        await using var controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = cluster.MetadataAddress,
                ClusterToken = cluster.Options.ClusterToken,
                Registry = new JobRegistryOptions { Sizing = new SizingOptions { MinimumNodes = 1, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = nodeCapacity }] } },

                // The autoscaler acts only when told to: nothing is above 100 %, and shrinking needs a quiet day.
                Autoscaler = new AutoscalerOptions { Lower = 0.5, Upper = 1.0, MinNodes = 1, Cooldown = TimeSpan.FromDays(1), NewNodeCapacityBytes = nodeCapacity, Resources = ScalingResources.Capacity },
                TelemetryInterval = TimeSpan.FromSeconds(1),
            },
            new InProcessProvisioner(cluster),
            NullLoggerFactory.Instance);
        await controller.StartAsync();
        var first = cluster.Nodes[0]!;
        controller.TrackNode(new ProvisionedNode(NodeTier.Dram, "0", first.NodeId, $"127.0.0.1:{first.EndPoint.Port}"));
        var url = new Uri(controller.Url, "/metrics");
        var token = cluster.Options.ClusterToken.ToString();
        double Delta(string before, string after, string series) => Exposition.ValueOrZero(after, series) - Exposition.ValueOrZero(before, series);
        var before = await Exposition.ScrapeAsync(url, token);

        // A scale-up asked for by hand: one decision, reason "requested".
        await controller.Autoscaler!.ScaleUpAsync(NodeTier.Dram, "asked by the test");
        var scaled = await Exposition.ScrapeAsync(url, token);
        Assert.Equal(1, Delta(before, scaled, "pocket_controller_events_total{kind=\"scale-up\",reason=\"requested\"}"));

        // Data on the nodes, then a drain of the fuller one: the counter moves by exactly the bytes the drain moved,
        // however the drain falls between the controller's once-a-second samples.
        using var api = new PocketControllerClient(controller.Url, cluster.Options.ClusterToken);
        var job = await api.RegisterJobAsync("drained", new JobHints { CapacityBytes = 16 << 20 });
        await using var client = await cluster.ConnectAsync();
        var data = new byte[1 << 20];
        Random.Shared.NextBytes(data);
        for (var i = 0; i < 6; i++)
        {
            await client.OpenJob(job.JobId, job.Token).PutAsync($"object-{i}", data);
        }

        var fullest = (await cluster.Admin(client).GetNodesAsync()).OrderByDescending(n => n.Used).First();
        Assert.True(fullest.Used > 0);
        var moved = await controller.Autoscaler.RemoveNodeAsync(fullest.Id, "asked by the test");
        Assert.True(moved >= fullest.Used, $"the drain moved {moved} bytes of a node using {fullest.Used}");
        var drained = await Exposition.ScrapeAsync(url, token);
        Assert.Equal(moved, Delta(before, drained, "pocket_controller_drain_moved_bytes_total"));
        Assert.Equal(1, Delta(scaled, drained, "pocket_controller_events_total{kind=\"scale-down\",reason=\"requested\"}"));
        Assert.Equal(1, Delta(scaled, drained, "pocket_controller_events_total{kind=\"node-drained\",reason=\"none\"}"));

        // Later samples (the drained node gone) add nothing; the data is all there.
        await WaitForAsync(async () => Exposition.Value(await Exposition.ScrapeAsync(url, token), "pocket_controller_nodes{tier=\"dram\",state=\"live\"}") == 1);
        Assert.Equal(moved, Delta(before, await Exposition.ScrapeAsync(url, token), "pocket_controller_drain_moved_bytes_total"));
        for (var i = 0; i < 6; i++)
        {
            Assert.Equal(data, await client.OpenJob(job.JobId, job.Token).GetAsync($"object-{i}"));
        }
    }

    [Fact]
    public async Task EveryMetricTheDocsAndTheGrafanaDashboardNameIsExposed()
    {
        await using var roles = await RolesAsync();
        await using var controller = new ControllerServer(
            new ControllerOptions { MetadataAddress = roles.MetadataAddress, ClusterToken = Token },
            null,
            NullLoggerFactory.Instance);
        await controller.StartAsync();
        await using var gateway = await StartGatewayAsync(controller.Url, roles.MetadataAddress);

        var exposed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var url in new[] { roles.MetadataMetrics, roles.StorageMetrics, new Uri(controller.Url, "/metrics"), new Uri(gateway.Url, "/metrics") })
        {
            foreach (var line in (await Exposition.ScrapeAsync(url, Token.ToString())).Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal)))
            {
                exposed.Add(line.Split(' ')[2]);
            }
        }

        var root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Pocket.slnx")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("the repository root (Pocket.slnx) is not above the test's directory");
        }

        var names = new System.Text.RegularExpressions.Regex(@"\bpocket_[a-z_]*[a-z]\b");
        foreach (var file in new[] { "docs/metrics.md", "deploy/grafana/pocket.json" })
        {
            var named = names.Matches(File.ReadAllText(Path.Combine(root, file))).Select(m => m.Value)
                .Select(n => n.EndsWith("_bucket", StringComparison.Ordinal) ? n[..^"_bucket".Length] : n)
                .Where(n => n != "pocket_ROLE").ToHashSet(StringComparer.Ordinal);
            Assert.True(named.Count > 10, $"{file} names {named.Count} metrics");
            Assert.All(named, n => Assert.True(exposed.Contains(n), $"{file} names {n}, which no role exposes"));
        }

        // And the docs list every metric a role exposes.
        var documented = File.ReadAllText(Path.Combine(root, "docs/metrics.md"));
        Assert.All(exposed.Where(n => n.StartsWith("pocket_", StringComparison.Ordinal)), n => Assert.Contains("`" + n + "`", documented, StringComparison.Ordinal));
    }

    private static async Task<GatewayServer> StartGatewayAsync(Uri controllerUrl, string metadataAddress)
    {
        var gateway = new GatewayServer(
            new GatewayOptions
            {
                ControllerUrl = controllerUrl,
                MetadataAddress = metadataAddress,
                Users = new Dictionary<string, string> { ["AKIDEXAMPLE"] = "secret" },
                ClusterToken = Token,
            },
            NullLoggerFactory.Instance);
        try
        {
            await gateway.StartAsync();
            return gateway;
        }
        catch
        {
            await gateway.DisposeAsync();
            throw;
        }
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within a minute");
            await Task.Delay(100);
        }
    }

    private static async Task<Roles> RolesAsync()
    {
        var roles = new Roles();
        try
        {
            var metadataRegistry = Prometheus.Metrics.NewCustomRegistry();
            var metadataRequests = RoleCollectors.Metadata(metadataRegistry, () => roles.Metadata);
            roles.Metadata = new MetadataServer(
                new MetadataServerOptions { ClusterToken = Token, Listener = new FrameServerOptions { WrapHandler = metadataRequests.Wrap } },
                NullLoggerFactory.Instance);
            await roles.Metadata.StartAsync();
            roles.MetadataListener = await MetricsListener.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), metadataRegistry, Token, NullLoggerFactory.Instance);

            var storageRegistry = Prometheus.Metrics.NewCustomRegistry();
            var storageRequests = RoleCollectors.Storage(storageRegistry, () => roles.Storage);
            roles.Storage = new StorageServer.StorageServer(
                new StorageServerOptions
                {
                    Metadata = new DnsEndPoint("127.0.0.1", roles.Metadata.EndPoint.Port),
                    ClusterToken = Token,
                    Capacity = 64L << 20,
                    Listener = new FrameServerOptions { WrapHandler = storageRequests.Wrap },
                },
                NullLoggerFactory.Instance);
            await roles.Storage.StartAsync();
            roles.StorageListener = await MetricsListener.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), storageRegistry, Token, NullLoggerFactory.Instance);
            return roles;
        }
        catch
        {
            await roles.DisposeAsync();
            throw;
        }
    }

    private sealed class Roles : IAsyncDisposable
    {
        public MetadataServer? Metadata { get; set; }

        public StorageServer.StorageServer? Storage { get; set; }

        public MetricsListener? MetadataListener { get; set; }

        public MetricsListener? StorageListener { get; set; }

        public string MetadataAddress => $"127.0.0.1:{Metadata!.EndPoint.Port}";

        public Uri MetadataMetrics => new(MetadataListener!.Url, MetricsEndpoint.Path);

        public Uri StorageMetrics => new(StorageListener!.Url, MetricsEndpoint.Path);

        public async ValueTask DisposeAsync()
        {
            if (StorageListener is not null)
            {
                await StorageListener.DisposeAsync();
            }

            if (MetadataListener is not null)
            {
                await MetadataListener.DisposeAsync();
            }

            if (Storage is not null)
            {
                await Storage.DisposeAsync();
            }

            if (Metadata is not null)
            {
                await Metadata.DisposeAsync();
            }
        }
    }
}
