using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Hosting;
using Pocket.Networking;

namespace Pocket.Gateway;

/// <summary>
/// The S3 gateway role: an S3-compatible HTTP endpoint where a bucket is a Pocket job. Buckets are registered and
/// deregistered through the controller's HTTP API; object bytes stream between the HTTP connection and Pocket's
/// storage nodes without ever being held whole. Listens on loopback port 0 unless told otherwise; <see cref="Url"/>
/// says where it ended up.
/// </summary>
public sealed class GatewayServer : IAsyncDisposable
{
    /// <summary>
    /// Connections the HTTP listener holds at once (S3 clients at a fan-in each keep a pool of connections); the next
    /// connect waits in the kernel's backlog until one closes. They also take from the process's descriptor budget,
    /// with the frame servers' and clients' connections: 600 connects held open on the unbounded gateway of an
    /// in-process `pocket up` whose open-file limit was 512 aborted it (the runtime, out of descriptors, could not start
    /// a thread).
    /// </summary>
    public const int MaxConnections = 4096;

    private readonly GatewayOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private MetadataConnections? _metadata;
    private PocketControllerClient? _controller;
    private BucketStore? _buckets;
    private WebApplication? _app;

    /// <summary>Makes a gateway; nothing listens until <see cref="StartAsync"/>.</summary>
    public GatewayServer(GatewayOptions options, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<GatewayServer>();
    }

    /// <summary>Base URL of the S3 endpoint, e.g. http://127.0.0.1:51234 (the AWS SDKs' ServiceURL / endpoint_url).</summary>
    public Uri Url { get; private set; } = null!;

    /// <summary>
    /// The metadata server the gateway connects to first, host:port; each bucket's objects go through the server its
    /// job was registered on.
    /// </summary>
    public string MetadataAddress { get; private set; } = string.Empty;

    /// <summary>Names of the buckets the gateway knows, in order.</summary>
    public IReadOnlyList<string> Buckets => _buckets?.All.Select(b => b.Name).ToList() ?? [];

    /// <summary>
    /// A bucket's own credentials (access key = job id, secret = job token), usable for that bucket only when
    /// <see cref="GatewayOptions.AllowJobCredentials"/> is on; null for an unknown bucket.
    /// </summary>
    public (string AccessKey, string SecretKey)? GetBucketCredentials(string bucket) =>
        _buckets?.Find(bucket) is { } b ? (b.Entry.JobId, b.Entry.Token) : null;

    /// <summary>Finds the metadata server, connects to it, loads the bucket map and starts listening.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        _controller = new PocketControllerClient(
            _options.ControllerUrl,
            new PocketControllerClientOptions { ClusterToken = _options.ClusterToken, CertificateValidation = _options.ControllerCertificateValidation });
        MetadataAddress = _options.MetadataAddress ?? await MetadataOfControllerAsync(_controller, cancellationToken).ConfigureAwait(false);
        var client = await PocketClient.ConnectAsync(MetadataAddress, _options.Client, cancellationToken).ConfigureAwait(false);
        _metadata = new MetadataConnections(client, _options.Client);
        _buckets = new BucketStore(_metadata, _options.StateDirectory, _logger);
        await _buckets.LoadAsync(cancellationToken).ConfigureAwait(false);
        var handler = new S3Handler(_options, client, _controller, _buckets, _logger);

        // An empty builder: a library must not pick up appsettings.json, ASPNETCORE_URLS or the host's logging setup.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = typeof(GatewayServer).Assembly.GetName().Name });
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(_options.Listen, listen =>
            {
                if (_options.Certificate is { } certificate)
                {
                    listen.UseHttps(certificate);
                }
            });

            // Bodies stream into Pocket, so Kestrel's 30 MB cap does not apply; the gateway counts against
            // MaxPutSize / MaxPartSize itself, and against MaxXmlBody for the bodies it reads whole.
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddLogging();
        builder.Services.AddSingleton<ILoggerFactory>(new FrameworkQuietLoggerFactory(_loggerFactory));
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        builder.Services.AddBoundedSocketTransport(MaxConnections, new BoundedConnections.Budget(DescriptorBudget.TryTakeAccepted, DescriptorBudget.Return, DescriptorBudget.Refresh));

        var app = builder.Build();
        var metrics = new GatewayMetrics(_options.ClusterToken, () => _buckets.All.Count);
        app.Use(metrics.InvokeAsync);
        app.Run(handler.HandleAsync);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException ex) when (ex.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new Pocket.Networking.PortInUseException("gateway", _options.Listen, ex);
        }

        _app = app;

        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel reported no address");
        Url = new Uri(address);
        GatewayLog.Listening(_logger, address, _options.ControllerUrl.ToString(), MetadataAddress);
    }

    /// <summary>Stops listening. Buckets (jobs) stay registered; with a state directory the next start finds them again.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync().ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
        }

        if (_metadata is not null)
        {
            await _metadata.DisposeAsync().ConfigureAwait(false);
        }

        _controller?.Dispose();
    }

    private static async Task<string> MetadataOfControllerAsync(PocketControllerClient controller, CancellationToken cancellationToken)
    {
        try
        {
            return (await controller.GetClusterAsync(cancellationToken).ConfigureAwait(false)).Metadata;
        }
        catch (PocketControllerException ex)
        {
            var hint = ex.HttpStatus == System.Net.HttpStatusCode.Unauthorized ? " (give the gateway the cluster token: GatewayOptions.ClusterToken)" : string.Empty;
            var status = ex.HttpStatus is { } code ? $"answered {(int)code} to" : "failed";
            throw new InvalidOperationException($"the controller {status} GET /v1/cluster: {ex.Message}{hint}", ex);
        }
    }
}
