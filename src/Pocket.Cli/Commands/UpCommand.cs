using System.CommandLine;
using System.Globalization;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Protocol;
using Pocket.Testing;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>`pocket up`: a whole cluster in this process until Ctrl-C, SIGTERM or --for runs out.</summary>
internal static class UpCommand
{
    public static Command Create()
    {
        var nodes = new Option<int>("--nodes") { Description = "Storage nodes", DefaultValueFactory = _ => 2 };
        var capacity = CommandRunner.SizeOption("--capacity", 1L << 30, "DRAM capacity of each storage node");
        var blockSize = CommandRunner.SizeOption("--block-size", 64 << 10, "Block size of the storage nodes");
        var port = new Option<int>("--port") { Description = "Metadata server port on 127.0.0.1 (0 = any free port)", DefaultValueFactory = _ => 7070 };
        var runFor = CommandRunner.DurationOption("--for", "Stop by itself after this long (e.g. 30s) instead of waiting for Ctrl-C");
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log what the servers do (to stderr)" };
        var command = new Command("up", "Start a Pocket cluster (metadata server and storage nodes) in this process")
        {
            nodes, capacity, blockSize, port, runFor, verbose,
        };
        nodes.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 64)
            {
                result.AddError("--nodes must be between 1 and 64");
            }
        });
        port.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 65535)
            {
                result.AddError("--port must be between 0 and 65535");
            }
        });
        blockSize.Validators.Add(result =>
        {
            var block = result.GetValueOrDefault<long>();
            if (block < 4096 || block > ProtocolLimits.Default.MaxDataBody || (block & (block - 1)) != 0)
            {
                result.AddError("--block-size must be a power of two of at least 4KiB");
            }
        });

        CommandRunner.SetAction(command, (parse, ct) => RunAsync(
            new PocketClusterOptions
            {
                StorageNodes = parse.GetValue(nodes),
                NodeCapacity = parse.GetValue(capacity),
                BlockSize = checked((int)parse.GetValue(blockSize)),
                MetadataPort = parse.GetValue(port),
            },
            parse.GetValue(runFor),
            parse.GetValue(verbose),
            ct));
        return command;
    }

    private static async Task<int> RunAsync(PocketClusterOptions options, TimeSpan? runFor, bool verbose, CancellationToken cancellationToken)
    {
        if (options.NodeCapacity < options.BlockSize)
        {
            throw new CliException($"--capacity {Units.FormatSize(options.NodeCapacity)} does not hold one block of {Units.FormatSize(options.BlockSize)}");
        }

        var home = PocketHome.Default();
        if (home.ReadCluster() is { } existing && existing.Pid != Environment.ProcessId && PocketHome.IsProcessAlive(existing.Pid))
        {
            throw new CliException($"a cluster is already running at {existing.Metadata} (pid {existing.Pid}, {home.ClusterFile}); stop it first or set POCKET_HOME");
        }

        // Stopping takes the nodes down before the metadata server, which then warns that they died: true,
        // but noise on a clean shutdown, so from then on only errors are shown. (A filter function replaces
        // the minimum level, so it carries both.)
        var minimum = verbose ? LogLevel.Information : LogLevel.Warning;
        var stopping = false;
        using var loggerFactory = LoggerFactory.Create(logging => logging
            .SetMinimumLevel(minimum)
            .AddFilter((_, level) => level >= (Volatile.Read(ref stopping) ? LogLevel.Error : minimum))
            .AddSimpleConsole(console =>
            {
                console.SingleLine = true;
                console.TimestampFormat = "HH:mm:ss.fff ";
            })
            .AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace));

        PocketCluster cluster;
        try
        {
            cluster = await PocketCluster.StartAsync(options, loggerFactory, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new CliException($"port {options.MetadataPort} is in use: choose another with --port, or --port 0 for any free port", ex);
        }
        catch (OutOfMemoryException ex)
        {
            throw new CliException($"cannot reserve {Units.FormatSize(options.NodeCapacity)} per node: {ex.Message}", ex);
        }

        await using (cluster.ConfigureAwait(false))
        {
            home.WriteCluster(new ClusterState(cluster.MetadataAddress, options.ClusterToken.ToString(), Environment.ProcessId));
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

                Volatile.Write(ref stopping, true);
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

    private static async Task PrintClusterAsync(PocketCluster cluster, PocketHome home, TimeSpan? runFor, CancellationToken cancellationToken)
    {
        IReadOnlyList<NodeInfo> nodes;
        var client = await cluster.ConnectAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            nodes = await client.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        }

        AnsiConsole.MarkupLine($"[green]Pocket is up[/]: metadata server [bold]{cluster.MetadataAddress}[/]");
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("node")
            .AddColumn("address")
            .AddColumn("tier")
            .AddColumn(new TableColumn("capacity").RightAligned())
            .AddColumn("state");
        foreach (var node in nodes.OrderBy(n => n.Id))
        {
            table.AddRow(
                node.Id.ToString(CultureInfo.InvariantCulture),
                node.Address,
                node.Tier.ToString().ToLowerInvariant(),
                Units.FormatSize(node.Capacity),
                node.State.ToString().ToLowerInvariant());
        }

        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"state file: {Markup.Escape(home.ClusterFile)}");
        AnsiConsole.MarkupLine(runFor is { } d
            ? $"stopping by itself in {Units.FormatDuration(d)} (or Ctrl-C)"
            : "Ctrl-C to stop (all data is dropped)");
    }
}
