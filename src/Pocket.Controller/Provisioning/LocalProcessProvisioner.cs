using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>Settings of <see cref="LocalProcessProvisioner"/>.</summary>
public sealed record LocalProcessProvisionerOptions
{
    /// <summary>The program to run (the `pocket` executable, or `dotnet`).</summary>
    public required string Executable { get; init; }

    /// <summary>Arguments before the role's own (e.g. the path of pocket.dll when <see cref="Executable"/> is dotnet).</summary>
    public IReadOnlyList<string> BaseArguments { get; init; } = [];

    /// <summary>
    /// host:port of the metadata server the nodes register with (several, comma-separated); null: the metadata servers
    /// this provisioner started (<see cref="LocalProcessProvisioner.StartMetadataAsync"/>), in the order they first started.
    /// </summary>
    public string? MetadataAddress { get; init; }

    /// <summary>Settings of the metadata servers this provisioner starts (`pocket metadata`).</summary>
    public LocalMetadataOptions Metadata { get; init; } = new();

    /// <summary>
    /// host:port where metadata servers may be started later (the metadata plane's spare addresses,
    /// <see cref="Scaling.MetadataScalingOptions.SpareAddresses"/>): storage children are told them after the running
    /// servers, so they join a server started there within a heartbeat round. Used when <see cref="MetadataAddress"/> is null.
    /// </summary>
    public IReadOnlyList<string> SpareMetadataAddresses { get; init; } = [];

    /// <summary>Passed to the child in its environment (POCKET_CLUSTER_TOKEN), never on its command line.</summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>Where ssd and hdd nodes keep their files.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Allocation unit of the nodes (a power of two); null leaves the storage role's default.</summary>
    public int? BlockSize { get; init; }

    /// <summary>Free memory each dram node keeps faulted in ahead of writes (`--dram-headroom`); null leaves the storage role's default.</summary>
    public long? DramHeadroom { get; init; }

    /// <summary>The nodes' idle timeout for client connections (`--idle-timeout`); null leaves the storage role's default.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>Event-loop threads of each role it starts (`--event-loops`); null leaves the roles' default.</summary>
    public int? EventLoops { get; init; }

    /// <summary>
    /// TLS of the nodes: each serves with this certificate and reaches the metadata server over TLS. Null: plain TCP
    /// (which a metadata server with TLS refuses).
    /// </summary>
    public NodeTlsFiles? Tls { get; init; }

    /// <summary>
    /// Port of each node's Prometheus metrics listener (`--metrics-port`; 0 = any free port, the only sensible value for
    /// several nodes on one host); null: no metrics listener and no per-request metering on the nodes.
    /// </summary>
    public int? MetricsPort { get; init; }

    /// <summary>
    /// What the host keeps for itself: before each node starts, the provisioner checks the host's available memory (and,
    /// for ssd and hdd nodes, the data directory's free disk) against the node's size, what the running nodes were
    /// promised and this reserve, and refuses the node with a <see cref="ProvisioningException"/> that says why. Null:
    /// no check.
    /// </summary>
    public HostBudgetOptions? HostBudget { get; init; } = new();

    /// <summary>How long a child may take to register.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The executable that runs this process, so children run the same build.</summary>
    public static (string Executable, IReadOnlyList<string> BaseArguments) CurrentProgram()
    {
        var process = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which program is running");
        var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
        return Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.OrdinalIgnoreCase) && !string.IsNullOrEmpty(entry)
            ? (process, [entry])
            : (process, []);
    }
}

/// <summary>Settings of the metadata children of a <see cref="LocalProcessProvisioner"/>.</summary>
public sealed record LocalMetadataOptions
{
    /// <summary>Address they listen on and are reached at.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port of the first one's Prometheus metrics listener (later ones: any free port); null: no metrics.</summary>
    public int? MetricsPort { get; init; }

    /// <summary>Each one's bound on object memory; null: the role's default.</summary>
    public long? MaxObjectMemory { get; init; }

    /// <summary>Each one's bound on inline bytes; null: the role's default.</summary>
    public long? InlineCapacity { get; init; }

    /// <summary>
    /// TLS of the metadata servers: each serves with the certificate and reaches storage nodes trusting
    /// <see cref="NodeTlsFiles.TrustPath"/>. Null: plain TCP.
    /// </summary>
    public NodeTlsFiles? Tls { get; init; }

    /// <summary>How long a metadata child may take to listen.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// Certificate files a storage node child is given (`pocket storage --tls-cert --tls-key --tls-ca --tls-name`): its
/// listener's certificate and key (PEM or PKCS#12, a password from POCKET_TLS_PASSWORD, which children inherit), the
/// CA or self-signed certificate it trusts for the metadata server (null: the system's roots), and the name the
/// metadata server's certificate must carry (null: its host).
/// </summary>
public sealed record NodeTlsFiles(string CertificatePath, string? KeyPath = null, string? TrustPath = null, string? ServerName = null);

/// <summary>
/// Starts each storage node as a child process running `pocket storage`, the default of `pocket up`: nodes are
/// separate processes as on real hosts, and a node that crashes takes only itself down. The child prints one
/// line (<see cref="RoleCommandLine.StorageReadyLine"/>) once registered; stopping a node ends its process.
/// </summary>
public sealed class LocalProcessProvisioner : IStorageProvisioner, IMetadataProvisioner, IAsyncDisposable
{
    private readonly Dictionary<string, (RoleProcess Process, ProvisionedMetadata Server)> _metadataChildren = [];
    private readonly List<string> _metadataAddresses = [];
    private readonly LocalProcessProvisionerOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<string, (RoleProcess Process, ProvisionedNode Node, long Capacity)> _children = [];
    private readonly List<NodeRequest> _starting = [];
    private readonly HostBudget? _budget;
    private readonly string _dataDirectory;
    private readonly Lock _lock = new();

    /// <summary>Makes a provisioner; nothing starts until asked.</summary>
    public LocalProcessProvisioner(LocalProcessProvisionerOptions options, ILoggerFactory loggerFactory)
        : this(options, loggerFactory, LinuxHostProbe.Instance)
    {
    }

    internal LocalProcessProvisioner(LocalProcessProvisionerOptions options, ILoggerFactory loggerFactory, IHostProbe probe)
    {
        _options = options;
        _logger = loggerFactory.CreateLogger<LocalProcessProvisioner>();
        // Children are always told where their files go, so the budget checks the disk they really use.
        _dataDirectory = options.DataDirectory ?? Path.Combine(Path.GetTempPath(), "pocket-data");
        _budget = options.HostBudget is { } budget ? new HostBudget(budget, probe, _dataDirectory) : null;
    }

    /// <summary>
    /// The host's memory and disk as the next start would count them (null when <see cref="LocalProcessProvisionerOptions.HostBudget"/>
    /// is off).
    /// </summary>
    public HostBudgetResponse? Budget
    {
        get
        {
            lock (_lock)
            {
                return _budget?.Report(Promised());
            }
        }
    }

    /// <inheritdoc />
    public IReadOnlyCollection<NodeTier> Tiers { get; } = [NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd];

    /// <summary>Child processes still running.</summary>
    public int Running
    {
        get
        {
            lock (_lock)
            {
                return _children.Values.Count(p => !p.Process.HasExited);
            }
        }
    }

    /// <summary>The nodes started and not stopped yet (each with its metrics URL when <see cref="LocalProcessProvisionerOptions.MetricsPort"/> is set).</summary>
    public IReadOnlyList<ProvisionedNode> Nodes
    {
        get
        {
            lock (_lock)
            {
                return [.. _children.Values.Select(c => c.Node)];
            }
        }
    }

    /// <summary>Raised after a node was started or stopped (on the thread that did it), e.g. to rewrite a list of scrape targets.</summary>
    public event Action? NodesChanged;

    /// <inheritdoc />
    public async Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken)
    {
        if (_budget is not null)
        {
            // Checked and reserved in one step: nodes started together (a scale-up of several) each see the others.
            lock (_lock)
            {
                if (_budget.Refusal(request, Promised()) is { } refusal)
                {
                    ControllerLog.HostBudgetRefused(_logger, NodeTierNames.Name(request.Tier), refusal);
                    throw new ProvisioningException(refusal);
                }

                _starting.Add(request);
            }
        }

        try
        {
            return await StartAsync(request, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            lock (_lock)
            {
                _starting.Remove(request);
            }
        }
    }

    /// <summary>Running children and starts under way (counted as holding nothing yet). Call under the lock.</summary>
    private List<RunningNode> Promised() =>
    [
        .. _children.Values.Where(c => !c.Process.HasExited).Select(c => new RunningNode(c.Node.Tier, c.Capacity, c.Process.Id)),
        .. _starting.Select(r => new RunningNode(r.Tier, r.CapacityBytes, ProcessId: 0)),
    ];

    private async Task<ProvisionedNode> StartAsync(NodeRequest request, CancellationToken cancellationToken)
    {
        List<string> arguments =
        [
            .. _options.BaseArguments,
            .. RoleCommandLine.Storage(new StorageRoleArguments(NodesMetadataAddress(), request.Tier, request.CapacityBytes)
            {
                StopOnStdinEof = true,
                Standby = request.Standby,
                BlockSize = _options.BlockSize,
                DramHeadroom = _options.DramHeadroom,
                IdleTimeout = _options.IdleTimeout,
                EventLoops = _options.EventLoops,
                DataDirectory = _dataDirectory,
                Tls = _options.Tls,
                MetricsPort = _options.MetricsPort,
            }),
        ];
        var child = await RoleProcess.StartAsync(
            _options.Executable, arguments, _options.ClusterToken, RoleCommandLine.StorageReadyPrefix, line => RoleCommandLine.TryParseStorageReady(line, out _, out _),
            "storage process", "register", _options.StartTimeout, cancellationToken).ConfigureAwait(false);
        _ = RoleCommandLine.TryParseStorageReady(child.ReadyLine, out var id, out var address);
        var handle = child.Id.ToString(CultureInfo.InvariantCulture);
        var node = new ProvisionedNode(request.Tier, handle, id, address) { MetricsUrl = RoleCommandLine.MetricsUrl(child.ReadyLine) };
        lock (_lock)
        {
            _children[handle] = (child, node, request.CapacityBytes);
        }

        ControllerLog.ProcessNodeStarted(_logger, id, address, child.Id);
        NodesChanged?.Invoke();
        return node;
    }

    /// <summary>The metadata servers a storage child is told: the configured ones, else those started here.</summary>
    private string NodesMetadataAddress()
    {
        if (_options.MetadataAddress is { } configured)
        {
            return configured;
        }

        lock (_lock)
        {
            return _metadataAddresses.Count > 0
                ? string.Join(',', _metadataAddresses.Concat(_options.SpareMetadataAddresses.Where(a => !_metadataAddresses.Contains(a, StringComparer.OrdinalIgnoreCase))))
                : throw new ProvisioningException("no metadata server to register storage nodes with: none configured and none started");
        }
    }

    /// <summary>The metadata servers started here and still running.</summary>
    public IReadOnlyList<ProvisionedMetadata> MetadataServers
    {
        get
        {
            lock (_lock)
            {
                return [.. _metadataChildren.Values.Select(c => c.Server)];
            }
        }
    }

    /// <summary>The process of a metadata server started here (for tests that kill it), or null.</summary>
    public int? MetadataProcessId(ProvisionedMetadata server)
    {
        lock (_lock)
        {
            return _metadataChildren.TryGetValue(server.Handle, out var child) ? child.Process.Id : null;
        }
    }

    /// <summary>
    /// Starts `pocket metadata` as a child process and waits until it listens. A replacement's lost jobs go to it in a
    /// file only its owner may read, deleted once the child has read it (it prints its ready line after).
    /// </summary>
    public async Task<ProvisionedMetadata> StartMetadataAsync(MetadataServerRequest request, CancellationToken cancellationToken)
    {
        var settings = _options.Metadata;

        // A replacement takes the address of the server it replaces: that one's process (dead, or frozen) goes first.
        List<RoleProcess> previous;
        lock (_lock)
        {
            var address = $"{settings.Host}:{request.Port.ToString(CultureInfo.InvariantCulture)}";
            previous = [.. _metadataChildren.Values.Where(c => request.Port != 0 && c.Server.Address == address).Select(c => c.Process)];
            foreach (var handle in _metadataChildren.Where(c => request.Port != 0 && c.Value.Server.Address == address).Select(c => c.Key).ToList())
            {
                _metadataChildren.Remove(handle);
            }
        }

        foreach (var process in previous)
        {
            await process.StopAsync(cancellationToken).ConfigureAwait(false);
        }

        string? lostFile = null;
        if (request.LostJobs.Count > 0)
        {
            var directory = Directory.CreateTempSubdirectory("pocket-lost-");
            lostFile = Path.Combine(directory.FullName, "lost-jobs");
            RoleCommandLine.WriteLostJobs(lostFile, request.LostJobs);
        }

        int? metricsPort;
        lock (_lock)
        {
            metricsPort = settings.MetricsPort is { } first ? (_metadataAddresses.Count == 0 ? first : 0) : null;
        }

        try
        {
            List<string> arguments =
            [
                .. _options.BaseArguments,
                .. RoleCommandLine.Metadata(new MetadataRoleArguments(settings.Host, request.Port)
                {
                    StopOnStdinEof = true,
                    MetricsPort = metricsPort,
                    IdleTimeout = _options.IdleTimeout,
                    EventLoops = _options.EventLoops,
                    MaxObjectMemory = settings.MaxObjectMemory,
                    InlineCapacity = settings.InlineCapacity,
                    JobNumbers = request.Stride > 1 ? (request.Offset, request.Stride) : null,
                    LostJobsFile = lostFile,
                    Tls = settings.Tls,
                }),
            ];
            var child = await RoleProcess.StartAsync(
                _options.Executable, arguments, _options.ClusterToken, RoleCommandLine.MetadataReadyPrefix, line => RoleCommandLine.TryParseMetadataReady(line, out _),
                "metadata process", "listen", settings.StartTimeout, cancellationToken).ConfigureAwait(false);
            _ = RoleCommandLine.TryParseMetadataReady(child.ReadyLine, out var address);
            var server = new ProvisionedMetadata(child.Id.ToString(CultureInfo.InvariantCulture), address) { MetricsUrl = RoleCommandLine.MetricsUrl(child.ReadyLine) };
            lock (_lock)
            {
                _metadataChildren[server.Handle] = (child, server);
                if (!_metadataAddresses.Contains(address))
                {
                    _metadataAddresses.Add(address);
                }
            }

            ControllerLog.ProcessMetadataStarted(_logger, address, child.Id, request.LostJobs.Count);
            NodesChanged?.Invoke();
            return server;
        }
        finally
        {
            if (lostFile is not null)
            {
                Directory.Delete(Path.GetDirectoryName(lostFile)!, recursive: true);
            }
        }
    }

    /// <inheritdoc />
    public async Task StopMetadataAsync(ProvisionedMetadata server, CancellationToken cancellationToken)
    {
        bool removed;
        (RoleProcess Process, ProvisionedMetadata Server) child;
        lock (_lock)
        {
            removed = _metadataChildren.Remove(server.Handle, out child);
        }

        if (!removed)
        {
            throw new ArgumentException($"'{server.Handle}' is not a metadata process this provisioner started", nameof(server));
        }

        try
        {
            await child.Process.StopAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            NodesChanged?.Invoke();
        }
    }

    /// <inheritdoc />
    public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        bool removed;
        (RoleProcess Process, ProvisionedNode Node, long Capacity) child;
        lock (_lock)
        {
            removed = _children.Remove(node.Handle, out child);
        }

        if (!removed)
        {
            throw new ArgumentException($"'{node.Handle}' is not a process this provisioner started", nameof(node));
        }

        try
        {
            await child.Process.StopAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            NodesChanged?.Invoke();
        }
    }

    /// <summary>Stops every child still running: the storage nodes first, then the metadata servers.</summary>
    public async ValueTask DisposeAsync()
    {
        List<RoleProcess> children;
        List<RoleProcess> metadata;
        lock (_lock)
        {
            children = [.. _children.Values.Select(c => c.Process)];
            _children.Clear();
            metadata = [.. _metadataChildren.Values.Select(c => c.Process)];
            _metadataChildren.Clear();
        }

        await Task.WhenAll(children.Select(p => p.StopAsync(CancellationToken.None))).ConfigureAwait(false);
        await Task.WhenAll(metadata.Select(p => p.StopAsync(CancellationToken.None))).ConfigureAwait(false);
    }
}
