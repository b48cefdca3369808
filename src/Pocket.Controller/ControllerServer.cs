using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Api;
using Pocket.Controller.Jobs;
using Pocket.Controller.Observability;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Hosting;
using Pocket.Networking;

namespace Pocket.Controller;

/// <summary>
/// The controller role: the job registry behind an HTTP/JSON API (any language can register a job with curl), with
/// an OpenAPI document at <c>/openapi/v1.json</c>. Every endpoint but <c>/healthz</c> and the OpenAPI document needs
/// the cluster token as <c>Authorization: Bearer &lt;token&gt;</c> (<see cref="ControllerOptions.ClusterToken"/>). Listens on loopback port 0 unless told otherwise; <see cref="Url"/>
/// says where it ended up.
/// </summary>
public sealed class ControllerServer : IAsyncDisposable
{
    /// <summary>
    /// Connections the HTTP listener holds at once (jobs' drivers, the dashboard and scrapers); the next connect waits
    /// in the kernel's backlog until one closes. They also take from the process's descriptor budget, with the frame
    /// servers' and clients' connections: 600 connects held open on the unbounded gateway of an in-process `pocket up`
    /// whose open-file limit was 512 aborted it (the runtime, out of descriptors, could not start a thread).
    /// </summary>
    public const int MaxConnections = 512;

    private readonly ControllerOptions _options;
    private readonly IStorageProvisioner? _provisioner;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private PocketClient? _metadata;
    private PocketAdminClient? _admin;
    private readonly List<PocketClient> _otherMetadata = [];
    private JobRegistry? _registry;
    private ClusterTelemetry? _telemetry;
    private Autoscaler? _autoscaler;
    private WarmPool? _warmPool;
    private JobUsageMeter? _meter;
    private ControllerMetrics? _metrics;
    private NodeReplacer? _replacer;
    private NodeInventory? _inventory;
    private MetadataWatch? _metadataWatch;
    private MetadataScaler? _metadataScaler;
    private WebApplication? _app;

    /// <summary>Makes a controller; <paramref name="provisioner"/> null means it never starts nodes.</summary>
    public ControllerServer(ControllerOptions options, IStorageProvisioner? provisioner, ILoggerFactory loggerFactory)
    {
        options.Validate();
        _options = options;
        _provisioner = provisioner;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<ControllerServer>();
        Events = new ClusterEventLog(options.EventLogLength);
        if (options.Autoscaler is not null && provisioner is null)
        {
            throw new ArgumentException("the autoscaler needs a provisioner to start and stop nodes");
        }

        if (options.MinimumNodes.Count > 0 && provisioner is null)
        {
            throw new ArgumentException("replacing dead nodes (minimum nodes per tier) needs a provisioner to start nodes");
        }

        if (options.MetadataScaling is not null && provisioner is not IMetadataProvisioner)
        {
            throw new ArgumentException("scaling the metadata plane needs a provisioner that starts metadata servers (the local one, as pocket up uses)");
        }

        if (options.WarmPool is not null && provisioner is null)
        {
            throw new ArgumentException("the warm pool needs a provisioner to start and stop nodes");
        }
    }

    /// <summary>Base URL of the HTTP API, e.g. http://127.0.0.1:51234.</summary>
    public Uri Url { get; private set; } = null!;

    /// <summary>The job registry (also usable in-process, without HTTP).</summary>
    public JobRegistry Registry => _registry ?? throw new InvalidOperationException("not started");

    /// <summary>The metadata server, host:port.</summary>
    public string MetadataAddress => _options.MetadataAddress;

    /// <summary>Scaling decisions and node deaths (also <c>GET /v1/events</c>).</summary>
    public ClusterEventLog Events { get; }

    /// <summary>Per-second node history (also <c>GET /v1/cluster/history</c>).</summary>
    public ClusterTelemetry Telemetry => _telemetry ?? throw new InvalidOperationException("not started");

    /// <summary>The autoscaler, when <see cref="ControllerOptions.Autoscaler"/> is set.</summary>
    public Autoscaler? Autoscaler => _autoscaler;

    /// <summary>
    /// Records a node started outside the controller (e.g. the first nodes of a local cluster) as one the controller
    /// may stop: should it die, its process is stopped beside its replacement (<see cref="ControllerOptions.MinimumNodes"/>),
    /// and the autoscaler may drain it (as <see cref="Scaling.Autoscaler.Adopt"/>).
    /// </summary>
    public void TrackNode(ProvisionedNode node) => (_inventory ?? throw new InvalidOperationException("not started")).Own(node);

    /// <summary>Replacements of lost metadata servers under way (completed when idle); for tests and orderly shutdown.</summary>
    public Task MetadataReplacements => _metadataWatch?.Current ?? Task.CompletedTask;

    /// <summary>A metadata server start or stop of the metadata-plane scaling under way (completed when idle); for tests and orderly shutdown.</summary>
    public Task MetadataScaling => _metadataScaler?.Current ?? Task.CompletedTask;

    /// <summary>Replacements of dead nodes under way (completed when idle); for tests and orderly shutdown.</summary>
    public Task Replacements => _replacer?.Current ?? Task.CompletedTask;

    /// <summary>The warm pool, when <see cref="ControllerOptions.WarmPool"/> is set.</summary>
    public WarmPool? WarmPool => _warmPool;

    /// <summary>Requests and GB-seconds of a job so far (null before its first telemetry tick, or when it is unknown).</summary>
    public JobMeterReading? JobMeter(string jobId) => _meter?.Read(jobId);

    /// <summary>Connects to the metadata server, starts the lease clock and the HTTP listener.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        _metadata = await PocketClient.ConnectAsync(_options.MetadataAddress, _options.MetadataClient, cancellationToken).ConfigureAwait(false);
        _admin = new PocketAdminClient(_metadata, _options.ClusterToken);
        foreach (var other in _options.OtherMetadataAddresses)
        {
            _otherMetadata.Add(await PocketClient.ConnectAsync(other, _options.MetadataClient, cancellationToken).ConfigureAwait(false));
        }

        var plane = new MetadataPlane([_admin, .. _otherMetadata.Select(c => new PocketAdminClient(c, _options.ClusterToken))], _options.MetadataScaling?.SpareAddresses);
        var time = _options.Registry.TimeProvider;
        if (_options.WarmPool is { } pool)
        {
            _warmPool = new WarmPool(plane, _provisioner!, pool, _options.Registry.Sizing, time, Events, _logger);
        }

        // Registry and autoscaler share one record of the nodes the controller may stop (a registration's nodes are the
        // autoscaler's to remove as well as its own) and claim warm-pool nodes through it.
        var inventory = _inventory = new NodeInventory(_warmPool);
        _registry = new JobRegistry(plane, _provisioner, _options.Registry, _loggerFactory, inventory);
        _meter = new JobUsageMeter(_registry, time, _logger);
        _metadataWatch = new MetadataWatch(plane, _registry, _provisioner as IMetadataProvisioner, _options.MetadataLiveness, time, Events, _logger);
        if (_options.Autoscaler is { } scaling)
        {
            _autoscaler = new Autoscaler(plane, _registry, inventory, _provisioner!, scaling, _options.Registry.Sizing, time, Events, _logger);
        }

        if (_options.MinimumNodes.Count > 0)
        {
            var sizing = _options.Registry.Sizing;
            _replacer = new NodeReplacer(
                _provisioner!,
                inventory,
                _options.MinimumNodes,
                _options.MinimumNodes.Keys.ToDictionary(t => t, t => _options.Autoscaler?.NewNodeCapacityBytes ?? sizing.ClassOf(t)?.CapacityBytes ?? sizing.NodeClasses[0].CapacityBytes),
                _options.Registry.NodeStartTimeout,
                time,
                Events,
                _logger);
        }

        // Metrics read the registry, the meter and the pool after each tick (the loop's last step).
        _metrics = new ControllerMetrics(_options, _registry, _meter, _warmPool, Events);
        _metadataScaler = new MetadataScaler(
            plane,
            _registry,
            _provisioner as IMetadataProvisioner,
            _options.MetadataScaling,
            async (address, cancel) => new PocketAdminClient(await PocketClient.ConnectAsync(address, _options.MetadataClient, cancel).ConfigureAwait(false), _options.ClusterToken),
            _options.MetadataLiveness.ProbeTimeout,
            time,
            Events,
            _logger);
        var loop = new ControlLoop(_registry, _warmPool, _replacer, _autoscaler, _meter, _metrics, _logger, _metadataScaler);
        _telemetry = new ClusterTelemetry(plane, time, _options.TelemetryInterval, _options.HistoryLength, Events, _logger, loop.TickAsync);

        // An empty builder: a library must not pick up appsettings.json, ASPNETCORE_URLS or the host's logging setup.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = typeof(ControllerServer).Assembly.GetName().Name });
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(_options.Listen, listen =>
            {
                if (_options.Certificate is { } certificate)
                {
                    listen.UseHttps(certificate);
                }
            });
            kestrel.Limits.MaxRequestBodySize = 64 << 10;
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddLogging();
        builder.Services.AddSingleton<ILoggerFactory>(new FrameworkQuietLoggerFactory(_loggerFactory));
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        builder.Services.AddBoundedSocketTransport(MaxConnections, new BoundedConnections.Budget(DescriptorBudget.TryTakeAccepted, DescriptorBudget.Return, DescriptorBudget.Refresh));
        builder.Services.AddRoutingCore();
        builder.Services.AddOpenApi();
        builder.Services.Configure<JsonOptions>(json =>
        {
            json.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.CamelCase;
            json.SerializerOptions.DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull;
        });

        var app = builder.Build();
        app.Use(new ControllerAuthentication(_options.ClusterToken, _logger).InvokeAsync);

        // The API only speaks JSON; curl -d sends form content type, which would otherwise get a bare 415.
        app.Use((context, next) =>
        {
            if (HttpMethods.IsPost(context.Request.Method) && context.Request.ContentType?.Contains("json", StringComparison.OrdinalIgnoreCase) != true)
            {
                context.Request.ContentType = "application/json";
            }

            return next(context);
        });
        app.UseRouting();
        new ControllerEndpoints(_registry, plane, _options, _logger) { Telemetry = _telemetry, Events = Events, Meter = _meter, HostBudget = _provisioner is LocalProcessProvisioner local ? () => local.Budget : null, MetadataOutages = _metadataWatch.Outages }.Map(app);
        app.MapOpenApi();
        Dashboard.Map(app, _metrics.Registry, _options.Registry.Sizing);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException ex) when (ex.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new Pocket.Networking.PortInUseException("controller", _options.Listen, ex);
        }

        _app = app;

        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel reported no address");
        Url = new Uri(address);
        _registry.Start();
        _telemetry.Start();
        _warmPool?.Start();
        _metadataWatch.Start();
        ControllerLog.Listening(_logger, address, _options.MetadataAddress);
    }

    /// <summary>Stops the listener, the lease clock and the warm pool's idle nodes. Jobs stay registered on the metadata server.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync().ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
        }

        if (_telemetry is not null)
        {
            await _telemetry.DisposeAsync().ConfigureAwait(false);
        }

        if (_metadataWatch is not null)
        {
            await _metadataWatch.DisposeAsync().ConfigureAwait(false);
        }

        if (_metadataScaler is not null)
        {
            await _metadataScaler.DisposeAsync().ConfigureAwait(false);
        }

        if (_autoscaler is not null)
        {
            // An action in flight was cancelled with the telemetry; wait for it so nothing uses the client afterwards.
            await _autoscaler.Current.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        if (_replacer is not null)
        {
            await _replacer.DisposeAsync().ConfigureAwait(false);
        }

        if (_warmPool is not null)
        {
            await _warmPool.DisposeAsync().ConfigureAwait(false);
        }

        if (_registry is not null)
        {
            await _registry.DisposeAsync().ConfigureAwait(false);
        }

        if (_metadata is not null)
        {
            await _metadata.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var other in _otherMetadata)
        {
            await other.DisposeAsync().ConfigureAwait(false);
        }
    }
}
