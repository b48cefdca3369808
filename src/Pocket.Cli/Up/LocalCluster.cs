using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Metrics;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Cli.Up;

/// <summary>Shape of a <see cref="LocalCluster"/>.</summary>
internal sealed record LocalClusterOptions
{
    /// <summary>DRAM storage nodes started through the provisioner before the cluster is reported up, when <see cref="Tiers"/> is null.</summary>
    public int InitialNodes { get; init; } = 2;

    /// <summary>
    /// Nodes to start per tier (<c>--tiers dram=2,ssd=1,hdd=1</c>); the tiers named here are the node classes the
    /// controller sizes jobs with and may start more nodes of (a tier named with 0 starts none at first). Null: DRAM
    /// only, <see cref="InitialNodes"/> of them.
    /// </summary>
    public IReadOnlyDictionary<NodeTier, int>? Tiers { get; init; }

    /// <summary>Bytes of every DRAM node, the first ones and those the controller starts later (the DRAM node class).</summary>
    public long NodeCapacity { get; init; } = 1L << 30;

    /// <summary>Bytes of a node per tier, overriding <see cref="NodeCapacity"/> (dram) and <see cref="DefaultFileCapacity"/> (ssd, hdd).</summary>
    public IReadOnlyDictionary<NodeTier, long> TierCapacities { get; init; } = new Dictionary<NodeTier, long>();

    /// <summary>Bits per second of a node per tier, overriding the paper's node classes (<see cref="NodeClassOptions"/>).</summary>
    public IReadOnlyDictionary<NodeTier, double> TierBandwidths { get; init; } = new Dictionary<NodeTier, double>();

    /// <summary>Dollars per hour of a node per tier, overriding the paper's node classes; the cheapest tier that meets a job wins.</summary>
    public IReadOnlyDictionary<NodeTier, double> TierCosts { get; init; } = new Dictionary<NodeTier, double>();

    /// <summary>The metadata server's bound on object memory; null: its default (half the memory the process may use).</summary>
    public long? MaxObjectMemory { get; init; }

    /// <summary>The metadata server's bound on inline bytes; null: its default (a quarter of the object memory, at most 256 MiB).</summary>
    public long? InlineCapacity { get; init; }

    /// <summary>Metadata servers (1 by default); the controller places each job on one, and every node serves them all.</summary>
    public int MetadataServers { get; init; } = 1;

    /// <summary>
    /// The most metadata servers the controller may run: above <see cref="MetadataServers"/> (the minimum) it starts and
    /// drains servers by their CPU and request rate (docs/controller.md, "Scaling the metadata plane"); null or at most
    /// <see cref="MetadataServers"/>: the plane keeps its size. Needs child processes.
    /// </summary>
    public int? MetadataServersMax { get; init; }

    /// <summary>The metadata plane's band; null: the defaults (<see cref="MetadataScalingOptions"/>).</summary>
    public MetadataScalingOptions? MetadataScaling { get; init; }

    /// <summary>Spare metadata servers the plane may add (0 when it keeps its size).</summary>
    internal int SpareMetadataServers => Math.Max(0, (MetadataServersMax ?? 0) - MetadataServers);

    /// <summary>Where ssd and hdd nodes keep their (sparse) files.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Block size of every node; null: each tier's default (<see cref="Pocket.StorageServer.BlockDevices.DefaultBlockSize"/>).</summary>
    public int? BlockSize { get; init; }

    /// <summary>Free memory each child dram node keeps faulted in ahead of writes; null: the storage role's default.</summary>
    public long? DramHeadroom { get; init; }

    /// <summary>Nodes to start per tier.</summary>
    public IReadOnlyDictionary<NodeTier, int> NodeCounts => Tiers ?? new Dictionary<NodeTier, int> { [NodeTier.Dram] = InitialNodes };

    /// <summary>Default local size of an ssd or hdd node: a sparse file, so only what is stored takes disk space.</summary>
    public static long DefaultFileCapacity(NodeTier tier) => tier == NodeTier.Hdd ? 8L << 30 : 4L << 30;

    /// <summary>Bytes of one node of <paramref name="tier"/>.</summary>
    public long CapacityOf(NodeTier tier) =>
        TierCapacities.TryGetValue(tier, out var bytes) ? bytes : tier == NodeTier.Dram ? NodeCapacity : DefaultFileCapacity(tier);

    /// <summary>Block size nodes of <paramref name="tier"/> get.</summary>
    public int BlockSizeOf(NodeTier tier) => BlockSize ?? Pocket.StorageServer.BlockDevices.DefaultBlockSize(tier);

    /// <summary>
    /// The node classes of the tiers started: this machine's capacities, and the paper's bandwidth and cost unless
    /// <see cref="TierBandwidths"/> or <see cref="TierCosts"/> name the tier.
    /// </summary>
    public IReadOnlyList<NodeClassOptions> NodeClasses() =>
        [.. NodeCounts.Keys.Order().Select(tier =>
        {
            var paper = tier switch
            {
                NodeTier.Ssd => NodeClassOptions.Ssd,
                NodeTier.Hdd => NodeClassOptions.Hdd,
                _ => NodeClassOptions.Dram,
            };
            return paper with
            {
                CapacityBytes = CapacityOf(tier),
                BandwidthBitsPerSecond = TierBandwidths.TryGetValue(tier, out var bits) ? bits : paper.BandwidthBitsPerSecond,
                CostPerHour = TierCosts.TryGetValue(tier, out var cost) ? cost : paper.CostPerHour,
            };
        })];

    /// <summary>Loopback port of the metadata server; 0 = any free port.</summary>
    public int MetadataPort { get; init; }

    /// <summary>Loopback port of the controller's HTTP API; 0 = any free port.</summary>
    public int ControllerPort { get; init; }

    /// <summary>Storage nodes inside this process instead of child processes.</summary>
    public bool InProcess { get; init; }

    public JobToken ClusterToken { get; init; } = JobToken.NewRandom();

    /// <summary>Pre-fault the memory of in-process nodes in the background.</summary>
    public bool PreTouchMemory { get; init; } = true;

    /// <summary>Port of the S3 gateway (0 = any free port); null starts no gateway.</summary>
    public int? GatewayPort { get; init; }

    /// <summary>The gateway's access key and secret (any job's bucket); made up when the cluster starts.</summary>
    public (string AccessKey, string SecretKey) GatewayUser { get; init; } = ("pocket", Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(20)));

    /// <summary>Keep each tier's utilisation inside 60-80 % by adding and draining nodes.</summary>
    public bool Autoscale { get; init; }

    /// <summary>Autoscaler settings that replace the defaults <see cref="Autoscale"/> picks (the benchmark drives it by hand).</summary>
    public AutoscalerOptions? Autoscaler { get; init; }

    /// <summary>Idle standby DRAM nodes the controller keeps ready for scale-ups (0: no warm pool).</summary>
    public int WarmPool { get; init; }

    /// <summary>
    /// Loopback port of the metadata server's Prometheus metrics (0 = any free port); the storage child processes then
    /// serve theirs on free ports. Null: no metrics listeners and no per-request metering on those roles (the controller
    /// and the gateway serve /metrics beside their APIs either way).
    /// </summary>
    public int? MetricsPort { get; init; }

    /// <summary>Idle timeout of the metadata server's and the nodes' connections; null leaves the default.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>Event-loop threads of the metadata server and of each node (0 = automatic: one per core, at least two).</summary>
    public int EventLoops { get; init; }

    /// <summary>TLS on every listener (metadata, nodes, controller, gateway) with this certificate, trusted by every role; null: none.</summary>
    public LocalTls? Tls { get; init; }

    /// <summary>How a client of this cluster's metadata server connects: TLS when on (administration adds <see cref="ClusterToken"/>).</summary>
    public PocketClientOptions ClientOptions() => Tls is { } tls
        ? new PocketClientOptions { TlsHost = LocalTls.Name, CertificateValidation = tls.Validation }
        : new PocketClientOptions();
}

/// <summary>
/// A whole cluster on this machine, as `pocket up` and `pocket demo` run it: the controller in this process; the
/// metadata servers and storage nodes child processes (`pocket metadata`, `pocket storage`) started through the
/// provisioner the controller uses later, so there is one way a server comes to be and a lost metadata server can be
/// replaced at its address. With <see cref="LocalClusterOptions.InProcess"/> every role runs in this process instead.
/// Disposing stops the controller, then every node, then the metadata servers.
/// </summary>
internal sealed class LocalCluster : IAsyncDisposable
{
    private readonly PocketCluster? _core;
    private readonly LocalProcessProvisioner? _children;
    private readonly IReadOnlyList<string> _metadataAddresses;
    private IReadOnlyList<string> _spareMetadata = [];
    private readonly List<ProvisionedNode> _initialNodes = [];
    private ControllerServer? _controller;
    private Pocket.Gateway.GatewayServer? _gateway;
    private MetricsListener? _metadataMetrics;

    private LocalCluster(LocalClusterOptions options, PocketCluster? core, IStorageProvisioner provisioner, LocalProcessProvisioner? children, IReadOnlyList<string> metadataAddresses)
    {
        Options = options;
        _core = core;
        _metadataAddresses = metadataAddresses;
        Provisioner = provisioner;
        _children = children;
    }

    public LocalClusterOptions Options { get; }

    /// <summary>host:port of the (first) metadata server.</summary>
    public string MetadataAddress => _metadataAddresses[0];

    /// <summary>host:port of every metadata server, the first one first.</summary>
    public IReadOnlyList<string> MetadataAddresses => _metadataAddresses;

    /// <summary>The child processes (metadata servers and storage nodes) when the cluster runs them; null in-process.</summary>
    public LocalProcessProvisioner? Children => _children;

    /// <summary>Base URL of the controller's HTTP API.</summary>
    public Uri ControllerUrl => _controller?.Url ?? throw new InvalidOperationException("not started");

    /// <summary>The controller URL as people type it (no trailing slash).</summary>
    public string ControllerText => ControllerUrl.ToString().TrimEnd('/');

    /// <summary>The S3 endpoint, when a gateway runs.</summary>
    public string? GatewayText => _gateway?.Url.ToString().TrimEnd('/');

    public IStorageProvisioner Provisioner { get; }

    /// <summary>The controller (its autoscaler, warm pool and events).</summary>
    public ControllerServer Controller => _controller ?? throw new InvalidOperationException("not started");

    /// <summary>"child processes" or "in-process", for messages.</summary>
    public string NodeKind => Options.InProcess ? "in-process" : "child processes";

    /// <summary>The nodes started at start-up (the handle of a child-process node is its pid).</summary>
    public IReadOnlyList<ProvisionedNode> InitialNodes => _initialNodes;

    /// <summary>The (first) metadata server's metrics URL, when <see cref="LocalClusterOptions.MetricsPort"/> is set.</summary>
    public Uri? MetadataMetricsUrl => _metadataMetrics is not null
        ? new Uri(_metadataMetrics.Url, MetricsEndpoint.Path)
        : _children?.MetadataServers.FirstOrDefault(m => m.Address == MetadataAddress)?.MetricsUrl;

    /// <summary>
    /// Every /metrics of this cluster now, by role: the controller's and the gateway's, the metadata server's and each
    /// running storage child's (when metrics are on); in-process nodes serve none.
    /// </summary>
    public IReadOnlyList<(string Role, Uri Url)> MetricsTargets()
    {
        List<(string, Uri)> targets = [("controller", new Uri(ControllerUrl, MetricsEndpoint.Path))];
        if (_gateway is not null)
        {
            targets.Add(("gateway", new Uri(_gateway.Url, MetricsEndpoint.Path)));
        }

        if (_metadataMetrics is not null)
        {
            targets.Add(("metadata", new Uri(_metadataMetrics.Url, MetricsEndpoint.Path)));
        }

        if (_children is not null)
        {
            targets.AddRange(_children.MetadataServers.Where(m => m.MetricsUrl is not null).Select(m => ("metadata", m.MetricsUrl!)));
        }

        if (_children is not null)
        {
            targets.AddRange(_children.Nodes.Where(n => n.MetricsUrl is not null).OrderBy(n => n.NodeId).Select(n => ("storage", n.MetricsUrl!)));
        }

        return targets;
    }

    /// <summary>Raised when a storage child starts or stops, i.e. when <see cref="MetricsTargets"/> changes.</summary>
    public event Action? MetricsTargetsChanged;

    /// <summary>Starts the metadata server, the controller and the first nodes; on failure stops whatever started.</summary>
    public static async Task<LocalCluster> StartAsync(LocalClusterOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        if (!options.InProcess)
        {
            return await StartChildrenAsync(options, loggerFactory, cancellationToken).ConfigureAwait(false);
        }

        if (options.SpareMetadataServers > 0)
        {
            throw new CliException("--metadata-max above --metadata needs child processes (the controller starts and stops `pocket metadata` processes); leave out --in-process");
        }

        var listener = new FrameServerOptions { EventLoops = options.EventLoops };
        if (options.IdleTimeout is { } idle)
        {
            listener = listener with { IdleTimeout = idle };
        }

        var connection = new FrameConnectionOptions();
        if (options.Tls is { } tls)
        {
            listener = listener with { Certificate = tls.Certificate };
            connection = connection with { TlsHost = LocalTls.Name, CertificateValidation = tls.Validation };
        }

        // The metadata server's requests are metered for its own registry only (in-process nodes share its listener options).
        PocketCluster? started = null;
        var metadataRegistry = Prometheus.Metrics.NewCustomRegistry();
        var metadataRequests = options.MetricsPort is null ? null : RoleCollectors.Metadata(metadataRegistry, () => started?.Metadata);

        // PocketCluster with no nodes is just the metadata server; in-process nodes are added to it by the provisioner.
        var core = started = await PocketCluster.StartAsync(
            new PocketClusterOptions
            {
                StorageNodes = 0,
                MetadataPort = options.MetadataPort,
                NodeCapacity = options.NodeCapacity,
                BlockSize = options.BlockSize ?? (64 << 10),
                ClusterToken = options.ClusterToken,
                PreTouchMemory = options.PreTouchMemory,
                DataDirectory = options.DataDirectory,
                Listener = listener,
                MetadataWrapHandler = metadataRequests is null ? null : metadataRequests.Wrap,
                Connection = connection,
                MaxObjectMemory = options.MaxObjectMemory,
                InlineCapacity = options.InlineCapacity,
                MetadataServers = options.MetadataServers,
            },
            loggerFactory,
            cancellationToken).ConfigureAwait(false);

        var cluster = new LocalCluster(options, core, new InProcessProvisioner(core, [.. options.NodeCounts.Keys]), null, core.MetadataAddresses);
        try
        {
            if (options.MetricsPort is { } metricsPort)
            {
                Prometheus.DotNetStats.Register(metadataRegistry);
                try
                {
                    cluster._metadataMetrics = await MetricsListener.StartAsync(
                        new IPEndPoint(IPAddress.Loopback, metricsPort), metadataRegistry, options.ClusterToken, loggerFactory, options.Tls?.Certificate, cancellationToken).ConfigureAwait(false);
                }
                catch (IOException ex)
                {
                    throw new PortInUseException("metrics listener", new IPEndPoint(IPAddress.Loopback, metricsPort), ex);
                }
            }

            await cluster.StartControllerAndNodesAsync(loggerFactory, cancellationToken).ConfigureAwait(false);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// The default: every server role a child process (`pocket metadata`, `pocket storage`) started through one
    /// <see cref="LocalProcessProvisioner"/>, which the controller also uses to replace a lost metadata server at its address.
    /// </summary>
    private static async Task<LocalCluster> StartChildrenAsync(LocalClusterOptions options, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        var (executable, baseArguments) = LocalProcessProvisionerOptions.CurrentProgram();
        var spare = SpareMetadataAddresses(options);
        var tlsFiles = options.Tls is { } files ? new NodeTlsFiles(files.CertificatePath, null, files.TrustPath, LocalTls.Name) : null;
        var children = new LocalProcessProvisioner(
            new LocalProcessProvisionerOptions
            {
                Executable = executable,
                BaseArguments = baseArguments,

                // Null: the nodes register with the metadata servers this provisioner starts (below), all of them, and
                // learn the spare addresses where the controller may start more.
                MetadataAddress = null,
                SpareMetadataAddresses = spare,
                Metadata = new LocalMetadataOptions { MetricsPort = options.MetricsPort, MaxObjectMemory = options.MaxObjectMemory, InlineCapacity = options.InlineCapacity, Tls = tlsFiles },
                ClusterToken = options.ClusterToken,
                BlockSize = options.BlockSize,
                DramHeadroom = options.DramHeadroom,
                DataDirectory = options.DataDirectory,
                IdleTimeout = options.IdleTimeout,
                EventLoops = options.EventLoops > 0 ? options.EventLoops : null,
                Tls = tlsFiles,

                // Several nodes on one host: each on a free port, which its ready line names.
                MetricsPort = options.MetricsPort is null ? null : 0,
            },
            loggerFactory);
        List<string> addresses = [];
        try
        {
            for (var i = 0; i < options.MetadataServers; i++)
            {
                var server = await children.StartMetadataAsync(
                    new MetadataServerRequest(i == 0 ? options.MetadataPort : 0, i, options.MetadataServers + spare.Count), cancellationToken).ConfigureAwait(false);
                addresses.Add(server.Address);
            }
        }
        catch (Exception ex)
        {
            await children.DisposeAsync().ConfigureAwait(false);

            // The child only says it exited: a port taken by another program is named the way an in-process start names it.
            if (ex is ProvisioningException && addresses.Count == 0)
            {
                ThrowIfTaken("metadata", options.MetadataPort, ex);
                ThrowIfTaken("metrics listener", options.MetricsPort ?? 0, ex);
            }

            throw;
        }

        var cluster = new LocalCluster(options, null, children, children, addresses) { _spareMetadata = spare };
        children.NodesChanged += () => cluster.MetricsTargetsChanged?.Invoke();
        try
        {
            await cluster.StartControllerAndNodesAsync(loggerFactory, cancellationToken).ConfigureAwait(false);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Where the controller may start further metadata servers: the ports after --port when it is fixed (7071, 7072, ...
    /// for the default 7070: below the ephemeral range, so no outgoing connection takes them meanwhile), else free ports
    /// the system picks now; each checked free. The nodes are told them from their start, like a StatefulSet's names.
    /// </summary>
    private static List<string> SpareMetadataAddresses(LocalClusterOptions options)
    {
        List<string> spare = [];
        var next = options.MetadataPort == 0 ? 0 : options.MetadataPort + options.MetadataServers;
        while (spare.Count < options.SpareMetadataServers)
        {
            if (next > 65535)
            {
                throw new CliException($"no free port for {options.SpareMetadataServers} spare metadata servers after --port {options.MetadataPort}");
            }

            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            try
            {
                probe.Bind(new IPEndPoint(IPAddress.Loopback, next));
                var port = ((IPEndPoint)probe.LocalEndPoint!).Port;
                spare.Add(string.Create(CultureInfo.InvariantCulture, $"127.0.0.1:{port}"));
            }
            catch (System.Net.Sockets.SocketException)
            {
                // Taken: the next one.
            }

            next = next == 0 ? 0 : next + 1;
        }

        return spare;
    }

    private static void ThrowIfTaken(string role, int port, Exception failure)
    {
        if (port == 0)
        {
            return;
        }

        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        try
        {
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            probe.Bind(endPoint);
        }
        catch (System.Net.Sockets.SocketException)
        {
            throw new PortInUseException(role, endPoint, failure);
        }
    }

    private async Task StartControllerAndNodesAsync(ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        var options = Options;
        var provisioner = Provisioner;
        _controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = MetadataAddress,
                OtherMetadataAddresses = [.. _metadataAddresses.Skip(1)],
                MetadataScaling = _spareMetadata.Count == 0 ? null : (options.MetadataScaling ?? new MetadataScalingOptions()) with { SpareAddresses = _spareMetadata },
                ClusterToken = options.ClusterToken,
                MetadataClient = options.ClientOptions(),
                Certificate = options.Tls?.Certificate,
                Listen = new IPEndPoint(IPAddress.Loopback, options.ControllerPort),
                Registry = new JobRegistryOptions
                {
                    // Nodes here are as large as this machine's capacities say, not the paper's 60 GB: sizing must
                    // count with (and ask the provisioner for) nodes of that size, of the tiers started.
                    Sizing = new SizingOptions { NodeClasses = options.NodeClasses() },

                    // In one process every metadata server reports that process's CPU: not a measure of either.
                    PlaceByCpu = !options.InProcess,
                },

                // New nodes, pooled or not, get their tier's class capacity (the sizing classes above).
                Autoscaler = options.Autoscaler ?? (options.Autoscale ? new AutoscalerOptions { MinNodes = Math.Max(1, options.NodeCounts.Values.Sum()), MaxNodes = Math.Max(16, options.NodeCounts.Values.Sum()) } : null),
                WarmPool = options.WarmPool > 0 ? new WarmPoolOptions { NodesPerTier = options.WarmPool } : null,

                // A node that dies is replaced while its tier has fewer than it started with, autoscaling or not.
                MinimumNodes = options.NodeCounts.Where(t => t.Value > 0).ToDictionary(t => t.Key, t => t.Value),
            },
            provisioner,
            loggerFactory);
        await _controller.StartAsync(cancellationToken).ConfigureAwait(false);

        var starts = options.NodeCounts.OrderBy(t => t.Key)
            .SelectMany(t => Enumerable.Repeat(new NodeRequest(t.Key, options.CapacityOf(t.Key)), t.Value))
            .Select(request => provisioner.StartNodeAsync(request, cancellationToken))
            .ToList();
        try
        {
            await Task.WhenAll(starts).ConfigureAwait(false);
        }
        finally
        {
            // Nodes that did start are remembered even when another failed; disposing stops them all anyway.
            _initialNodes.AddRange(starts.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result));
        }

        // The first nodes are the controller's to stop should they die, and the autoscaler's to drain too (it keeps
        // at least its minimum).
        foreach (var node in _initialNodes)
        {
            _controller.TrackNode(node);
        }

        if (options.GatewayPort is { } gatewayPort)
        {
            _gateway = new Pocket.Gateway.GatewayServer(
                new Pocket.Gateway.GatewayOptions
                {
                    ControllerUrl = ControllerUrl,
                    MetadataAddress = MetadataAddress,
                    Listen = new IPEndPoint(IPAddress.Loopback, gatewayPort),
                    Users = new Dictionary<string, string> { [options.GatewayUser.AccessKey] = options.GatewayUser.SecretKey },
                    Client = options.ClientOptions(),
                    ClusterToken = options.ClusterToken,
                    Certificate = options.Tls?.Certificate,
                    ControllerCertificateValidation = options.Tls?.Validation,
                },
                loggerFactory);
            await _gateway.StartAsync(cancellationToken).ConfigureAwait(false);
        }

    }

    public async ValueTask DisposeAsync()
    {
        if (_metadataMetrics is not null)
        {
            await _metadataMetrics.DisposeAsync().ConfigureAwait(false);
        }

        if (_gateway is not null)
        {
            await _gateway.DisposeAsync().ConfigureAwait(false);
        }

        // The controller first, so it starts no node while the others stop.
        if (_controller is not null)
        {
            await _controller.DisposeAsync().ConfigureAwait(false);
        }

        if (_children is not null)
        {
            await _children.DisposeAsync().ConfigureAwait(false);
        }

        if (_core is not null)
        {
            await _core.DisposeAsync().ConfigureAwait(false);
        }
    }
}
