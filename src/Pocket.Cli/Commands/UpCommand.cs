using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Pocket.Admin;
using Pocket.Cli.Up;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket up`: metadata server and controller in this process, storage nodes as child processes (or in-process),
/// until Ctrl-C, SIGTERM or --for runs out.
/// </summary>
internal static class UpCommand
{
    public static Command Create()
    {
        var nodes = new Option<int>("--nodes") { Description = "DRAM storage nodes to start with (jobs that need more get them from the controller); see --tiers for other tiers", DefaultValueFactory = _ => 2 };
        var tiers = new Option<Dictionary<NodeTier, int>?>("--tiers")
        {
            CustomParser = result => Parse<int>(result, TierSpec.TryParseCounts),
            Description = "Storage nodes to start per tier, e.g. dram=2,ssd=1,hdd=1 (instead of --nodes); the tiers named are the ones jobs may use (ssd=0: none at first)",
            HelpName = "TIER=N,...",
        };
        var capacity = CommandRunner.SizeOption("--capacity", 1L << 30, "DRAM capacity of each storage node (also the size of nodes the controller starts)");
        var nodeCapacity = new Option<Dictionary<NodeTier, long>?>("--node-capacity")
        {
            CustomParser = result => Parse<long>(result, TierSpec.TryParseCapacities),
            Description = $"Capacity of one node per tier, e.g. ssd=8GiB,hdd=16GiB (defaults: dram = --capacity, ssd {Units.FormatBytes(LocalClusterOptions.DefaultFileCapacity(NodeTier.Ssd))}, hdd {Units.FormatBytes(LocalClusterOptions.DefaultFileCapacity(NodeTier.Hdd))}, as sparse files)",
            HelpName = "TIER=SIZE,...",
        };
        var nodeBandwidth = new Option<Dictionary<NodeTier, double>?>("--node-bandwidth")
        {
            CustomParser = result => Parse<double>(result, TierSpec.TryParseBandwidths),
            Description = "Bandwidth of one node per tier for sizing and autoscaling, e.g. dram=10Gbps,hdd=400Mbps (defaults: the paper's node classes, dram and ssd 8Gbps, hdd 320Mbps)",
            HelpName = "TIER=RATE,...",
        };
        var nodeCost = new Option<Dictionary<NodeTier, double>?>("--node-cost")
        {
            CustomParser = result => Parse<double>(result, TierSpec.TryParseCosts),
            Description = "Dollars per hour of one node per tier; jobs go to the cheapest tier that meets them, e.g. dram=0.532,ssd=0.624 (defaults: the paper's prices, hdd 0.468)",
            HelpName = "TIER=COST,...",
        };
        var dataDir = new Option<string?>("--data-dir") { Description = "Directory for the ssd and hdd nodes' files (default: data in the pocket home directory)", HelpName = "DIR" };
        var blockSize = CommandRunner.OptionalSizeOption("--block-size", "Block size of the storage nodes (default: 64KiB for dram and ssd, 1MiB for hdd)");
        var dramHeadroom = RoleCommands.DramHeadroomOption();
        var port = new Option<int>("--port") { Description = "Metadata server port on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7070 };
        var controllerPort = new Option<int>("--controller-port") { Description = "Controller HTTP port on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7080 };
        var inProcess = new Option<bool>("--in-process") { Description = "Run the storage nodes inside this process instead of as child processes" };
        var metricsPort = new Option<int>("--metrics-port")
        {
            Description = "Port of the metadata server's Prometheus metrics on 127.0.0.1 (0 = any free port); storage nodes serve theirs on free ports, the controller and gateway at /metrics beside their APIs; every URL is listed in metrics-targets.json in the pocket home directory",
            DefaultValueFactory = _ => 0,
        };
        var noMetrics = new Option<bool>("--no-metrics") { Description = "No metrics listeners on the metadata server and storage nodes (and no per-request metering there)" };
        var gatewayPort = new Option<int>("--gateway-port") { Description = "Port of the S3 gateway on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7090 };
        var noGateway = new Option<bool>("--no-gateway") { Description = "Start no S3 gateway" };
        var autoscale = new Option<bool>("--autoscale") { Description = "Accepted for older scripts: the autoscaler runs by default (see --static)" };
        var fixedSize = new Option<bool>("--static") { Description = "Keep the storage nodes started (and those jobs need) instead of adding and draining nodes to keep utilisation within 60-80 %" };
        var warmPool = new Option<int>("--warm-pool") { Description = "Idle standby nodes kept ready so a scale-up takes one instead of starting one (0 = none)", DefaultValueFactory = _ => 0 };
        var maxObjectMemory = CommandRunner.OptionalSizeOption(
            "--max-object-memory",
            "The metadata server's memory for objects over all jobs (keys, 200 bytes of records per object, inline bytes); past it creates fail with QuotaExceeded, and small puts go through storage nodes while their records fit; a quarter of it, at most 256MiB, may hold small objects inline (default: half the memory this process may use, at least 64MiB)");
        maxObjectMemory.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is <= 0)
            {
                result.AddError("--max-object-memory must be positive");
            }
        });
        var metadataServers = new Option<int>("--metadata")
        {
            Description = "Metadata servers to start (on --port and the next free ports); the controller places each job on the least loaded one and every storage node shares its blocks between them",
            DefaultValueFactory = _ => 1,
        };
        metadataServers.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 16)
            {
                result.AddError("--metadata must be between 1 and 16");
            }
        });
        var metadataMax = new Option<int?>("--metadata-max")
        {
            Description = "Most metadata servers the controller may run: it starts one more (on the ports after --port) while their CPU or request rate per server is above 70 % of a core or 31,000 req/s, and drains one it started (no new jobs; stopped when they end) while below 30 % and 13,000 req/s for a minute (default: --metadata, the plane keeps its size)",
        };
        metadataMax.Validators.Add(result =>
        {
            var max = result.GetValueOrDefault<int?>();
            var start = result.Parent?.GetResult(metadataServers)?.GetValueOrDefault<int>() ?? 1;
            if (max is < 1 or > 16 || max < start)
            {
                result.AddError($"--metadata-max must be between --metadata ({start}) and 16");
            }

            if (max > start && result.Parent?.GetResult(fixedSize) is { Implicit: false } && result.Parent.GetResult(fixedSize)!.GetValueOrDefault<bool>())
            {
                result.AddError("--static keeps the metadata plane at --metadata servers too: give either --static or --metadata-max");
            }
        });
        var inlineCapacity = RoleCommands.InlineCapacityOption();
        var runFor = CommandRunner.DurationOption("--for", "Stop by itself after this long (e.g. 30s) instead of waiting for Ctrl-C");
        var idleTimeout = RoleCommands.IdleTimeoutOption();
        var eventLoops = ListenerArguments.EventLoopsOption();
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log what the servers do (to stderr)" };
        var tls = new Option<bool>("--tls") { Description = "TLS on every listener (metadata, nodes, controller API, S3 gateway) with a self-signed certificate made at start (tls/cert.pem and tls/ca.pem in the pocket home directory; client verbs here trust it)" };
        var command = new Command("up", "Start a Pocket cluster on this machine: metadata server, controller and storage nodes")
        {
            nodes, tiers, capacity, nodeCapacity, nodeBandwidth, nodeCost, dataDir, blockSize, dramHeadroom, port, controllerPort, metricsPort, noMetrics, inProcess, gatewayPort, noGateway, autoscale, fixedSize, warmPool, maxObjectMemory, inlineCapacity, metadataServers, metadataMax, idleTimeout, eventLoops, runFor, verbose, tls,
        };
        warmPool.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 64)
            {
                result.AddError("--warm-pool must be between 0 and 64");
            }
        });
        nodes.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 64)
            {
                result.AddError("--nodes must be between 0 and 64");
            }
        });
        foreach (var option in new[] { port, controllerPort, gatewayPort, metricsPort })
        {
            CommandRunner.PortRange(option);
        }

        blockSize.Validators.Add(result =>
        {
            var block = result.GetValueOrDefault<long?>() ?? (64 << 10);
            if (block < 4096 || block > ProtocolLimits.Default.MaxDataBody || (block & (block - 1)) != 0)
            {
                result.AddError("--block-size must be a power of two of at least 4KiB");
            }
        });

        fixedSize.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<bool>() && result.Parent?.GetResult(autoscale) is { Implicit: false })
            {
                result.AddError("give either --static or --autoscale, not both");
            }
        });

        tiers.Validators.Add(result =>
        {
            if (result.Parent?.GetResult(nodes) is { Implicit: false })
            {
                result.AddError("give either --nodes (DRAM nodes) or --tiers, not both");
            }
        });

        CommandRunner.SetAction(command, (parse, ct) => RunAsync(
            new LocalClusterOptions
            {
                InitialNodes = parse.GetValue(nodes),
                Tiers = parse.GetValue(tiers),
                NodeCapacity = parse.GetValue(capacity),
                TierCapacities = parse.GetValue(nodeCapacity) ?? new Dictionary<NodeTier, long>(),
                TierBandwidths = parse.GetValue(nodeBandwidth) ?? new Dictionary<NodeTier, double>(),
                TierCosts = parse.GetValue(nodeCost) ?? new Dictionary<NodeTier, double>(),
                DataDirectory = parse.GetValue(dataDir),
                BlockSize = parse.GetValue(blockSize) is { } block ? checked((int)block) : null,
                DramHeadroom = parse.GetValue(dramHeadroom),
                MetadataPort = parse.GetValue(port),
                ControllerPort = parse.GetValue(controllerPort),
                InProcess = parse.GetValue(inProcess),
                GatewayPort = parse.GetValue(noGateway) ? null : parse.GetValue(gatewayPort),
                MetricsPort = parse.GetValue(noMetrics) ? null : parse.GetValue(metricsPort),
                Autoscale = !parse.GetValue(fixedSize),
                WarmPool = parse.GetValue(warmPool),
                IdleTimeout = parse.GetValue(idleTimeout),
                EventLoops = parse.GetValue(eventLoops),
                MaxObjectMemory = parse.GetValue(maxObjectMemory),
                InlineCapacity = parse.GetValue(inlineCapacity),
                MetadataServers = parse.GetValue(metadataServers),
                MetadataServersMax = parse.GetValue(fixedSize) ? null : parse.GetValue(metadataMax),
            },
            parse.GetValue(runFor),
            parse.GetValue(verbose),
            parse.GetValue(tls),
            ct));
        return command;
    }

    private delegate bool TierListParser<T>(string text, out Dictionary<NodeTier, T> values, out string error);

    /// <summary>Parses a TIER=VALUE,... option once, when the command line is parsed; a bad list is one error line.</summary>
    private static Dictionary<NodeTier, T>? Parse<T>(ArgumentResult result, TierListParser<T> parse)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (parse(text, out var values, out var error))
        {
            return values;
        }

        result.AddError(error);
        return null;
    }

    private static async Task<int> RunAsync(LocalClusterOptions options, TimeSpan? runFor, bool verbose, bool tls, CancellationToken cancellationToken)
    {
        foreach (var (option, named) in new[] { ("--node-capacity", options.TierCapacities.Keys), ("--node-bandwidth", options.TierBandwidths.Keys), ("--node-cost", options.TierCosts.Keys) })
        {
            if (named.FirstOrDefault(t => !options.NodeCounts.ContainsKey(t)) is var unused && unused != 0)
            {
                throw new CliException($"{option} names {NodeTierNames.Name(unused)}, a tier this cluster does not have (add it to --tiers, e.g. --tiers dram=2,{NodeTierNames.Name(unused)}=1)");
            }
        }

        foreach (var tier in options.NodeCounts.Keys)
        {
            if (options.CapacityOf(tier) < options.BlockSizeOf(tier))
            {
                throw new CliException($"{NodeTierNames.Name(tier)} node capacity {Units.FormatBytes(options.CapacityOf(tier))} does not hold one block of {Units.FormatBytes(options.BlockSizeOf(tier))}");
            }
        }

        var home = PocketHome.Default();
        options = WithDataDirectory(options, home);
        if (home.ReadCluster() is { } existing && existing.Pid != Environment.ProcessId && PocketHome.IsProcessAlive(existing.Pid))
        {
            throw new CliException($"a cluster is already running at {existing.Controller ?? existing.Metadata} (pid {existing.Pid}, {home.ClusterFile}); stop it first or set POCKET_HOME");
        }

        // Checked first: Kestrel logs a failed bind with its whole stack trace before it throws.
        if (options.ControllerPort != 0 && !IsPortFree(options.ControllerPort))
        {
            throw new CliException($"port {options.ControllerPort} is in use: choose another with --controller-port, or --controller-port 0 for any free port");
        }

        if (options.GatewayPort is { } gatewayPort and not 0 && !IsPortFree(gatewayPort))
        {
            throw new CliException($"port {gatewayPort} is in use: choose another with --gateway-port, --gateway-port 0 for any free port, or --no-gateway");
        }

        // Made after the running-cluster check: a second `up` must not replace the first one's certificate.
        using var localTls = tls ? LocalTls.Create(Path.Combine(home.Directory, "tls")) : null;
        options = options with { Tls = localTls };
        using var logging = new ClusterLogging(verbose);
        LocalCluster cluster;
        try
        {
            cluster = await LocalCluster.StartAsync(options, logging.Factory, cancellationToken).ConfigureAwait(false);
        }
        catch (Pocket.Networking.PortInUseException ex)
        {
            var option = ex.Role switch
            {
                "metadata" => "--port",
                "controller" => "--controller-port",
                "gateway" => "--gateway-port",
                "metrics listener" => "--metrics-port",
                _ => null,
            };
            throw new CliException(option is null ? ex.Message : $"{ex.Message}: choose another with {option}, or {option} 0 for any free port", ex);
        }
        catch (ProvisioningException ex)
        {
            throw new CliException($"storage nodes did not start: {ex.Message}", ex);
        }
        catch (OutOfMemoryException ex)
        {
            throw new CliException($"cannot reserve {Units.FormatBytes(options.CapacityOf(NodeTier.Dram))} per DRAM node: {ex.Message}", ex);
        }

        await using (cluster.ConfigureAwait(false))
        {
            home.WriteCluster(new ClusterState(cluster.MetadataAddress, options.ClusterToken.ToString(), Environment.ProcessId, cluster.ControllerText, cluster.GatewayText, options.GatewayUser.AccessKey, options.GatewayUser.SecretKey, localTls?.TrustPath));
            var targets = new MetricsTargetsFile(home.MetricsTargetsFile, cluster.MetricsTargets);
            cluster.MetricsTargetsChanged += targets.Write;
            targets.Write();
            try
            {
                await PrintClusterAsync(cluster, home, runFor, cancellationToken).ConfigureAwait(false);
                try
                {
                    await Task.Delay(runFor ?? Timeout.InfiniteTimeSpan, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // Ctrl-C or SIGTERM: the normal way to stop, so it is not an error.
                }

                logging.Stopping();
                AnsiConsole.MarkupLine("stopping ...");
            }
            finally
            {
                cluster.MetricsTargetsChanged -= targets.Write;
                targets.Remove();
                home.RemoveCluster(Environment.ProcessId);
            }
        }

        AnsiConsole.MarkupLine("[green]stopped[/]: every job and object of this cluster is gone");
        return 0;
    }

    /// <summary>
    /// When ssd or hdd nodes are asked for: the data directory (default: data in the pocket home directory),
    /// created, and checked to have room for every file node started now at its full capacity.
    /// </summary>
    private static LocalClusterOptions WithDataDirectory(LocalClusterOptions options, PocketHome home)
    {
        var fileTiers = options.NodeCounts.Keys.Where(t => t != NodeTier.Dram).ToList();
        if (fileTiers.Count == 0)
        {
            return options;
        }

        var directory = Path.GetFullPath(options.DataDirectory ?? Path.Combine(home.Directory, "data"));
        try
        {
            Directory.CreateDirectory(directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"cannot use --data-dir {directory}: {ex.Message}", ex);
        }

        var needed = fileTiers.Sum(t => options.NodeCounts[t] * options.CapacityOf(t));
        var free = new DriveInfo(directory).AvailableFreeSpace;
        if (needed > free)
        {
            var asked = string.Join(" + ", fileTiers.Where(t => options.NodeCounts[t] > 0).Select(t => $"{options.NodeCounts[t]} x {NodeTierNames.Name(t)} {Units.FormatBytes(options.CapacityOf(t))}"));
            throw new CliException($"not enough space in {directory}: {asked} = {Units.FormatBytes(needed)}, but its file system has {Units.FormatBytes(free)} free; lower --node-capacity or the node counts, or choose another --data-dir");
        }

        return options with { DataDirectory = directory };
    }

    private static bool IsPortFree(int port)
    {
        try
        {
            var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            return false;
        }
    }

    private static async Task PrintClusterAsync(LocalCluster cluster, PocketHome home, TimeSpan? runFor, CancellationToken cancellationToken)
    {
        IReadOnlyList<NodeInfo> nodes;
        var client = await PocketClient.ConnectAsync(cluster.MetadataAddress, cluster.Options.ClientOptions(), cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            nodes = await client.Admin(cluster.Options.ClusterToken).GetNodesAsync(cancellationToken).ConfigureAwait(false);
        }

        AnsiConsole.MarkupLine($"[green]Pocket is up[/] (storage nodes: {cluster.NodeKind})");
        AnsiConsole.MarkupLine($"controller: [bold]{Markup.Escape(cluster.ControllerText)}[/]");

        // The token rides in the fragment, which the browser keeps to itself; the page reads it and drops it from the address bar.
        AnsiConsole.MarkupLine($"dashboard:  [bold]{Markup.Escape(cluster.ControllerText)}/#token={cluster.Options.ClusterToken}[/]");
        if (cluster.GatewayText is { } gateway)
        {
            AnsiConsole.MarkupLine($"S3 gateway: [bold]{Markup.Escape(gateway)}[/] (credentials: `pocket s3 credentials --json`)");
        }
        AnsiConsole.MarkupLine($"metadata:   [bold]{Markup.Escape(cluster.MetadataAddress)}[/]{(cluster.Options.Tls is null ? string.Empty : " (TLS)")}");
        AnsiConsole.MarkupLine(cluster.MetadataMetricsUrl is { } metrics
            ? $"metrics:    [bold]{Markup.Escape(metrics.ToString())}[/] (metadata; each node's below; all in {Markup.Escape(home.MetricsTargetsFile)} for Prometheus, bearer: the cluster token)"
            : $"metrics:    controller and gateway at /metrics; none on the metadata server and nodes (--no-metrics); list: {Markup.Escape(home.MetricsTargetsFile)}");
        if (cluster.Options.Tls is { } tls)
        {
            AnsiConsole.MarkupLine($"TLS:        every listener, self-signed for {LocalTls.Name} and 127.0.0.1; clients trust [bold]{Markup.Escape(tls.TrustPath)}[/] (client verbs here do; elsewhere pass {ClientTls.OptionName} FILE or set {ClientTls.Variable})");
        }

        AnsiConsole.MarkupLine("node classes: " + Markup.Escape(string.Join("; ", cluster.Options.NodeClasses().Select(c =>
            string.Create(CultureInfo.InvariantCulture, $"{NodeTierNames.Name(c.Tier)} {Units.FormatBytes(c.CapacityBytes)}, {c.BandwidthBitsPerSecond / 1e9:0.##} Gb/s, ${c.CostPerHour:0.###}/h")))));
        AnsiConsole.MarkupLine(cluster.Controller.Autoscaler is { } scaler
            ? Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"scaling:    elastic, {scaler.Options.MinNodes}-{scaler.Options.MaxNodes} nodes, each tier kept within {scaler.Options.Lower * 100:0}-{scaler.Options.Upper * 100:0} % (--static to turn off); jobs without hints share running nodes"))
            : "scaling:    static (--static): nodes are only started for jobs that need them, never drained");
        if ((cluster.Provisioner as LocalProcessProvisioner)?.Budget is { } budget)
        {
            AnsiConsole.MarkupLine("host:       " + Markup.Escape(StatusCommand.HostLine(budget)));
        }

        if (cluster.Options.DataDirectory is { } data && cluster.Options.NodeCounts.Keys.Any(t => t != NodeTier.Dram))
        {
            AnsiConsole.MarkupLine($"data dir:   {Markup.Escape(data)} (ssd and hdd files, deleted when the nodes stop)");
        }

        var started = cluster.InitialNodes.Where(n => n.NodeId is not null).ToDictionary(n => n.NodeId!.Value);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("node")
            .AddColumn("address")
            .AddColumn("tier")
            .AddColumn(new TableColumn("capacity").RightAligned())
            .AddColumn("state")
            .AddColumn("process")
            .AddColumn("metrics");
        foreach (var node in nodes.OrderBy(n => n.Id))
        {
            table.AddRow(
                node.Id.ToString(CultureInfo.InvariantCulture),
                node.Address,
                node.Tier.Name(),
                Units.FormatBytes(node.Capacity),
                node.State.ToString().ToLowerInvariant(),
                cluster.Options.InProcess ? "in-process" : started.TryGetValue(node.Id, out var child) ? $"pid {child.Handle}" : "?",
                Markup.Escape(started.GetValueOrDefault(node.Id)?.MetricsUrl?.ToString() ?? "-"));
        }

        if (nodes.Count > 0)
        {
            AnsiConsole.Write(table);
        }
        else
        {
            AnsiConsole.MarkupLine("no storage nodes yet: the controller starts them as jobs register");
        }

        AnsiConsole.MarkupLine($"state file: {Markup.Escape(home.ClusterFile)} (client verbs here find the cluster through it; elsewhere set {ControllerConnection.Variable})");
        AnsiConsole.MarkupLine(runFor is { } d
            ? $"stopping by itself in {Units.FormatDuration(d)} (or Ctrl-C)"
            : "Ctrl-C to stop (all data is dropped)");
    }
}
