using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Pocket.Cli.Hosting;
using Pocket.Client;
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
        var nodes = new Option<int>("--nodes") { Description = "Storage nodes to start with (jobs that need more get them from the controller)", DefaultValueFactory = _ => 2 };
        var capacity = CommandRunner.SizeOption("--capacity", 1L << 30, "DRAM capacity of each storage node (also the size of nodes the controller starts)");
        var blockSize = CommandRunner.SizeOption("--block-size", 64 << 10, "Block size of the storage nodes");
        var port = new Option<int>("--port") { Description = "Metadata server port on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7070 };
        var controllerPort = new Option<int>("--controller-port") { Description = "Controller HTTP port on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7080 };
        var inProcess = new Option<bool>("--in-process") { Description = "Run the storage nodes inside this process instead of as child processes" };
        var gatewayPort = new Option<int>("--gateway-port") { Description = "Port of the S3 gateway on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7090 };
        var noGateway = new Option<bool>("--no-gateway") { Description = "Start no S3 gateway" };
        var autoscale = new Option<bool>("--autoscale") { Description = "Add and drain storage nodes to keep utilisation within 60-80 %" };
        var warmPool = new Option<int>("--warm-pool") { Description = "Idle standby nodes kept ready so a scale-up takes one instead of starting one (0 = none)", DefaultValueFactory = _ => 0 };
        var runFor = CommandRunner.DurationOption("--for", "Stop by itself after this long (e.g. 30s) instead of waiting for Ctrl-C");
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log what the servers do (to stderr)" };
        var command = new Command("up", "Start a Pocket cluster on this machine: metadata server, controller and storage nodes")
        {
            nodes, capacity, blockSize, port, controllerPort, inProcess, gatewayPort, noGateway, autoscale, warmPool, runFor, verbose,
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
        foreach (var option in new[] { port, controllerPort })
        {
            option.Validators.Add(result =>
            {
                if (result.GetValueOrDefault<int>() is < 0 or > 65535)
                {
                    result.AddError($"{option.Name} must be between 0 and 65535");
                }
            });
        }

        blockSize.Validators.Add(result =>
        {
            var block = result.GetValueOrDefault<long>();
            if (block < 4096 || block > ProtocolLimits.Default.MaxDataBody || (block & (block - 1)) != 0)
            {
                result.AddError("--block-size must be a power of two of at least 4KiB");
            }
        });

        CommandRunner.SetAction(command, (parse, ct) => RunAsync(
            new LocalClusterOptions
            {
                InitialNodes = parse.GetValue(nodes),
                NodeCapacity = parse.GetValue(capacity),
                BlockSize = checked((int)parse.GetValue(blockSize)),
                MetadataPort = parse.GetValue(port),
                ControllerPort = parse.GetValue(controllerPort),
                InProcess = parse.GetValue(inProcess),
                GatewayPort = parse.GetValue(noGateway) ? null : parse.GetValue(gatewayPort),
                Autoscale = parse.GetValue(autoscale),
                WarmPool = parse.GetValue(warmPool),
            },
            parse.GetValue(runFor),
            parse.GetValue(verbose),
            ct));
        return command;
    }

    private static async Task<int> RunAsync(LocalClusterOptions options, TimeSpan? runFor, bool verbose, CancellationToken cancellationToken)
    {
        if (options.NodeCapacity < options.BlockSize)
        {
            throw new CliException($"--capacity {Units.FormatSize(options.NodeCapacity)} does not hold one block of {Units.FormatSize(options.BlockSize)}");
        }

        var home = PocketHome.Default();
        if (home.ReadCluster() is { } existing && existing.Pid != Environment.ProcessId && PocketHome.IsProcessAlive(existing.Pid))
        {
            throw new CliException($"a cluster is already running at {existing.Controller ?? existing.Metadata} (pid {existing.Pid}, {home.ClusterFile}); stop it first or set POCKET_HOME");
        }

        // Checked first: Kestrel logs a failed bind with its whole stack trace before it throws.
        if (options.ControllerPort != 0 && !IsPortFree(options.ControllerPort))
        {
            throw new CliException($"port {options.ControllerPort} is in use: choose another with --controller-port, or --controller-port 0 for any free port");
        }

        using var logging = new ClusterLogging(verbose);
        LocalCluster cluster;
        try
        {
            cluster = await LocalCluster.StartAsync(options, logging.Factory, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new CliException($"port {options.MetadataPort} is in use: choose another with --port, or --port 0 for any free port", ex);
        }
        catch (IOException ex) when (ex.InnerException is AddressInUseException)
        {
            throw new CliException($"port {options.ControllerPort} is in use: choose another with --controller-port, or --controller-port 0 for any free port", ex);
        }
        catch (Pocket.Controller.ProvisioningException ex)
        {
            throw new CliException($"storage nodes did not start: {ex.Message}", ex);
        }
        catch (OutOfMemoryException ex)
        {
            throw new CliException($"cannot reserve {Units.FormatSize(options.NodeCapacity)} per node: {ex.Message}", ex);
        }

        await using (cluster.ConfigureAwait(false))
        {
            home.WriteCluster(new ClusterState(cluster.MetadataAddress, options.ClusterToken.ToString(), Environment.ProcessId, cluster.ControllerText, cluster.GatewayText, options.GatewayUser.AccessKey, options.GatewayUser.SecretKey));
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
                home.RemoveCluster(Environment.ProcessId);
            }
        }

        AnsiConsole.MarkupLine("[green]stopped[/]: every job and object of this cluster is gone");
        return 0;
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
        var client = await PocketClient.ConnectAsync(cluster.MetadataAddress, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            nodes = await client.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        }

        AnsiConsole.MarkupLine($"[green]Pocket is up[/] (storage nodes: {cluster.NodeKind})");
        AnsiConsole.MarkupLine($"controller: [bold]{Markup.Escape(cluster.ControllerText)}[/]");
        if (cluster.GatewayText is { } gateway)
        {
            AnsiConsole.MarkupLine($"S3 gateway: [bold]{Markup.Escape(gateway)}[/] (credentials: `pocket s3 credentials --json`)");
        }
        AnsiConsole.MarkupLine($"metadata:   [bold]{Markup.Escape(cluster.MetadataAddress)}[/]");
        var processes = cluster.InitialNodes.Where(n => n.NodeId is not null).ToDictionary(n => n.NodeId!.Value, n => n.Handle);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("node")
            .AddColumn("address")
            .AddColumn("tier")
            .AddColumn(new TableColumn("capacity").RightAligned())
            .AddColumn("state")
            .AddColumn("process");
        foreach (var node in nodes.OrderBy(n => n.Id))
        {
            table.AddRow(
                node.Id.ToString(CultureInfo.InvariantCulture),
                node.Address,
                node.Tier.ToString().ToLowerInvariant(),
                Units.FormatSize(node.Capacity),
                node.State.ToString().ToLowerInvariant(),
                cluster.Options.InProcess ? "in-process" : processes.TryGetValue(node.Id, out var pid) ? $"pid {pid}" : "?");
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
