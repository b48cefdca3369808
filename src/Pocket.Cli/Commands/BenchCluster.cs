using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Embedded;
using Pocket.LoadGenerator;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Storage;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>Settings of the cluster a bench starts for itself.</summary>
internal sealed record BenchClusterOptions(int Nodes, long NodeCapacity, int BlockSize, NodeTier Tier, string? DataDirectory, bool InProcess);

/// <summary>
/// The cluster `pocket bench` (and `pocket bench sort`) runs when it is given none: by default the metadata server
/// and every storage node are child processes (`pocket metadata`, `pocket storage`), so their CPU time can be read
/// from /proc apart from the load generator's; with --in-process everything shares this process, as before, and
/// server CPU is not known. ssd and hdd nodes keep their files in a fresh directory that is removed afterwards.
/// </summary>
internal sealed class BenchCluster : IAsyncDisposable
{
    private readonly RoleProcess? _metadataProcess;
    private readonly LocalProcessProvisioner? _nodes;
    private readonly PocketCluster? _inProcess;
    private readonly string? _dataDirectory;

    private BenchCluster(BenchClusterOptions options, string metadata, JobToken token, RoleProcess? metadataProcess, LocalProcessProvisioner? nodes, PocketCluster? inProcess, string? dataDirectory)
    {
        Options = options;
        MetadataAddress = metadata;
        ClusterToken = token;
        _metadataProcess = metadataProcess;
        _nodes = nodes;
        _inProcess = inProcess;
        _dataDirectory = dataDirectory;
    }

    public BenchClusterOptions Options { get; }

    public string MetadataAddress { get; }

    public JobToken ClusterToken { get; }

    /// <summary>The server processes (metadata first), or empty when the cluster runs in this process.</summary>
    public IReadOnlyList<int> ServerPids { get; private set; } = [];

    /// <summary>How the cluster runs, for reports.</summary>
    public string Description => string.Create(CultureInfo.InvariantCulture,
        $"own cluster ({Options.Nodes} {Options.Tier.Name()} nodes of {Units.FormatBytes(Options.NodeCapacity)}, {(Options.InProcess ? "in the bench process" : "child processes")})");

    /// <summary>What the server CPU figures cover, or null when they cannot be told apart from the bench's own.</summary>
    public string? CpuScope => ServerPids.Count == 0
        ? null
        : $"metadata + {ServerPids.Count - 1} storage processes (/proc, 10 ms ticks)";

    public static async Task<BenchCluster> StartAsync(BenchClusterOptions options, Action<string> status, CancellationToken cancellationToken)
    {
        string? dataDirectory = null;
        if (options.Tier != NodeTier.Dram)
        {
            var parent = options.DataDirectory ?? Path.GetTempPath();
            dataDirectory = Path.Combine(parent, "pocket-bench-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dataDirectory);
        }

        var tier = options.Tier.Name();
        status(string.Create(CultureInfo.InvariantCulture,
            $"starting a cluster: {options.Nodes} {tier} nodes of {Units.FormatBytes(options.NodeCapacity)}{(dataDirectory is null ? "" : $" in {dataDirectory}")}, {(options.InProcess ? "in this process" : "as child processes")}"));
        try
        {
            return options.InProcess
                ? await StartInProcessAsync(options, dataDirectory, status, cancellationToken).ConfigureAwait(false)
                : await StartProcessesAsync(options, dataDirectory, status, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            RemoveQuietly(dataDirectory);
            throw;
        }
    }

    /// <summary>Summed user + system CPU seconds of the server processes; null in-process or when one cannot be read.</summary>
    public double? ServerCpuSeconds() => ServerPids.Count == 0 ? null : ProcStat.CpuSeconds(ServerPids);

    private static async Task<BenchCluster> StartInProcessAsync(BenchClusterOptions options, string? dataDirectory, Action<string> status, CancellationToken cancellationToken)
    {
        // Child roles take POCKET_EVENT_LOOPS from the environment; servers in this process are told it here.
        if (!ListenerArguments.TryEventLoopsFromEnvironment(out var loops, out var error))
        {
            throw new CliException(error);
        }

        var core = await PocketCluster.StartAsync(
            new PocketClusterOptions
            {
                StorageNodes = 0,
                NodeCapacity = options.NodeCapacity,
                BlockSize = options.BlockSize,
                DataDirectory = dataDirectory,
                Listener = new FrameServerOptions { EventLoops = loops },
            },
            cancellationToken: cancellationToken).ConfigureAwait(false);
        var cluster = new BenchCluster(options, core.MetadataAddress, core.Options.ClusterToken, null, null, core, dataDirectory);
        try
        {
            for (var i = 0; i < options.Nodes; i++)
            {
                await core.AddNodeAsync(cancellationToken: cancellationToken, tier: options.Tier).ConfigureAwait(false);
            }

            // Nodes fault their headroom in the background while serving; timing before that finishes would charge
            // Pocket for page faults that a node which has been up for a moment never takes.
            var reclaimers = core.Nodes.Where(n => n?.Store.Device is NativeMemoryDevice).Select(n => n!.Reclaimer).ToList();
            await WaitAsync(() => reclaimers.All(r => r.HeadroomReady), status, cancellationToken).ConfigureAwait(false);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<BenchCluster> StartProcessesAsync(BenchClusterOptions options, string? dataDirectory, Action<string> status, CancellationToken cancellationToken)
    {
        var token = JobToken.NewRandom();
        var (executable, baseArguments) = LocalProcessProvisionerOptions.CurrentProgram();
        var (metadataProcess, address) = await StartMetadataAsync(executable, baseArguments, token, cancellationToken).ConfigureAwait(false);
        var nodes = new LocalProcessProvisioner(
            new LocalProcessProvisionerOptions
            {
                Executable = executable,
                BaseArguments = baseArguments,
                MetadataAddress = address,
                ClusterToken = token,
                BlockSize = options.BlockSize,
                DataDirectory = dataDirectory,
            },
            NullLoggerFactory.Instance);
        var cluster = new BenchCluster(options, address, token, metadataProcess, nodes, null, dataDirectory);
        try
        {
            var request = new NodeRequest(options.Tier, options.NodeCapacity);
            var started = await Task.WhenAll(Enumerable.Range(0, options.Nodes).Select(_ => nodes.StartNodeAsync(request, cancellationToken))).ConfigureAwait(false);
            var storagePids = started.Select(n => int.Parse(n.Handle, NumberStyles.None, CultureInfo.InvariantCulture)).ToList();
            cluster.ServerPids = [metadataProcess.Id, .. storagePids];

            // A DRAM node faults its headroom in the background; its mapping's resident set reaches the headroom when
            // that is done. Timing before then would charge Pocket for page faults that a node up for a moment never takes.
            if (options.Tier == NodeTier.Dram)
            {
                var headroom = Math.Min(SpaceReclaimerOptions.DefaultDramHeadroom, options.NodeCapacity);
                await WaitAsync(() => storagePids.All(pid => ProcStat.MappingResidentBytes(pid, options.NodeCapacity) >= headroom), status, cancellationToken).ConfigureAwait(false);
            }

            return cluster;
        }
        catch (ProvisioningException ex)
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw new CliException($"could not start a storage node: {ex.Message}", ex);
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>`pocket metadata --port 0` as a child; it prints its address once listening.</summary>
    private static async Task<(RoleProcess Process, string Address)> StartMetadataAsync(string executable, IReadOnlyList<string> baseArguments, JobToken token, CancellationToken cancellationToken)
    {
        try
        {
            var process = await RoleProcess.StartAsync(
                executable, [.. baseArguments, .. RoleCommandLine.Metadata("127.0.0.1", 0, stopOnStdinEof: true)], token, RoleCommandLine.MetadataReadyPrefix,
                line => RoleCommandLine.TryParseMetadataReady(line, out _), "the metadata server", "listen", TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            _ = RoleCommandLine.TryParseMetadataReady(process.ReadyLine, out var address);
            return (process, address);
        }
        catch (ProvisioningException ex)
        {
            throw new CliException(ex.Message, ex);
        }
    }

    private static async Task WaitAsync(Func<bool> warm, Action<string> status, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (!warm())
        {
            if (clock.Elapsed > TimeSpan.FromMinutes(5))
            {
                throw new CliException("node memory headroom is still not faulted in after 5 minutes");
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }

        status(string.Create(CultureInfo.InvariantCulture, $"node memory headroom faulted in after {clock.Elapsed.TotalSeconds:0.0} s"));
    }

    private static void RemoveQuietly(string? directory)
    {
        if (directory is null)
        {
            return;
        }

        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            CommandRunner.Error.MarkupLine($"[yellow]warning:[/] could not remove {Markup.Escape(directory)}: {Markup.Escape(ex.Message)}");
        }
    }

    /// <summary>Storage nodes first (they would otherwise complain that the metadata server went away), then the metadata server, then the data.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_nodes is not null)
        {
            await _nodes.DisposeAsync().ConfigureAwait(false);
        }

        if (_metadataProcess is not null)
        {
            await _metadataProcess.DisposeAsync().ConfigureAwait(false);
        }

        if (_inProcess is not null)
        {
            await _inProcess.DisposeAsync().ConfigureAwait(false);
        }

        RemoveQuietly(_dataDirectory);
    }
}
