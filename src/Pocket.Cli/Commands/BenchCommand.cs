using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Pocket.Client;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.Testing;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench`: the same workload through Pocket and each --vs peer, in one process and one run,
/// interleaved per operation (pocket, then each peer), so that only same-run ratios are compared.
/// </summary>
internal static class BenchCommand
{
    private const int EmbeddedNodes = 2;
    private const int EmbeddedBlockSize = 64 << 10;

    public static Command Create()
    {
        var size = CommandRunner.SizeOption("--size", 1 << 10, "Object size");
        var clients = new Option<int>("--clients") { Description = "Concurrent clients, each issuing sequential operations", DefaultValueFactory = _ => 1 };
        var ops = new Option<long?>("--ops") { Description = "Timed operations per system and op, over all clients", HelpName = "N" };
        var duration = CommandRunner.DurationOption("--duration", "Timed run per system and op (default 10s unless --ops is given)");
        var warmup = CommandRunner.DurationOption("--warmup", "Untimed warm-up before each timed run (default 1s)");
        var op = new Option<string>("--op")
        {
            Description = "put, get, mixed (50/50), or meta (lookup, create_delete, list100 and count of 0-byte objects, each also alone), or a comma list such as put,get",
            DefaultValueFactory = _ => "put,get",
            HelpName = "put|get|mixed|meta",
        };
        var peers = new Option<string[]>("--vs")
        {
            Description = "Also run the workload against a RESP server (Redis, Garnet), e.g. redis=resp://127.0.0.1:6379",
            HelpName = "NAME=resp://HOST:PORT",
            AllowMultipleArgumentsPerToken = false,
            Arity = ArgumentArity.ZeroOrMore,
        };
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var command = new Command("bench", "Measure latency and throughput of put/get, side by side with other systems")
        {
            size, clients, ops, duration, warmup, op, peers, json, metadata,
        };
        CommandRunner.SetAction(command, (parse, ct) => RunAsync(Validate(parse, size, clients, ops, duration, warmup, op, peers, json, metadata), ct));
        command.Subcommands.Add(BenchElasticCommand.Create());
        return command;
    }

    private static async Task<int> RunAsync(BenchSettings settings, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var connection = ClusterConnection.TryResolve(settings.Metadata, PocketHome.Default());
        PocketCluster? cluster = null;
        long? nodeCapacity = null;
        try
        {
            if (connection is null)
            {
                nodeCapacity = RoundUp(Math.Max(1L << 30, settings.Size * settings.Clients * 4), EmbeddedBlockSize);
                cluster = await StartEmbeddedAsync(nodeCapacity.Value, cancellationToken).ConfigureAwait(false);
                connection = new ClusterConnection(cluster.MetadataAddress, cluster.Options.ClusterToken, "embedded");
            }

            var pocketWhere = cluster is null ? connection.Metadata : $"embedded ({EmbeddedNodes} nodes of {Units.FormatSize(nodeCapacity!.Value)}, in this process)";
            var client = await connection.ConnectAsync(cancellationToken).ConfigureAwait(false);
            await using (client.ConfigureAwait(false))
            {
                var job = await RegisterAsync(client, cancellationToken).ConfigureAwait(false);
                var targets = new List<IBenchTarget> { new PocketBenchTarget(job, embedded: cluster is not null) };
                List<BenchResult> results = [];
                BenchPlan plan;
                try
                {
                    foreach (var peer in settings.Peers)
                    {
                        Status($"connecting to {peer.Name} at {peer.Host}:{peer.Port}");
                        targets.Add(await RedisBenchTarget.ConnectAsync(peer, cancellationToken).ConfigureAwait(false));
                    }

                    plan = await PlanAsync(settings, client, cancellationToken).ConfigureAwait(false);
                    var runner = new BenchRunner(plan, settings.Ops.Any(o => o.ReadsData()), Status);
                    foreach (var op in settings.Ops)
                    {
                        foreach (var target in targets)
                        {
                            var result = await runner.RunAsync(target, op, cancellationToken).ConfigureAwait(false);
                            results.Add(result);
                            Status(string.Create(CultureInfo.InvariantCulture,
                                $"{result.System} {op.Name()}: {result.Ops} ops, p50 {result.PercentileMicros(50)} us, p99 {result.PercentileMicros(99)} us, {result.OpsPerSecond:0.##} ops/s, {result.MiBPerSecond:0.0} MiB/s"));
                        }
                    }
                }
                finally
                {
                    foreach (var target in targets)
                    {
                        await target.DisposeAsync().ConfigureAwait(false);
                    }

                    await DeregisterQuietlyAsync(client, job.Id).ConfigureAwait(false);
                }

                if (settings.Json)
                {
                    CommandRunner.WriteJson(BenchReport.ToJson(results, plan, pocketWhere, settings.Peers, nodeCapacity, started));
                }
                else
                {
                    BenchReport.WriteTable(results, plan, pocketWhere);
                }
            }
        }
        finally
        {
            if (cluster is not null)
            {
                await cluster.DisposeAsync().ConfigureAwait(false);
            }
        }

        return 0;
    }

    /// <summary>
    /// Checked here rather than in a command validator: in System.CommandLine 2.0 such a validator reads
    /// options left at their defaults as zero.
    /// </summary>
    private static BenchSettings Validate(ParseResult parse, Option<long> size, Option<int> clients, Option<long?> ops, Option<TimeSpan?> duration, Option<TimeSpan?> warmup, Option<string> op, Option<string[]> peers, Option<bool> json, Option<string?> metadata)
    {
        var bytes = parse.GetValue(size);
        if (bytes < 1 || bytes > Array.MaxLength)
        {
            throw new CliException($"--size must be between 1 byte and {Units.FormatSize(Array.MaxLength)}");
        }

        var clientCount = parse.GetValue(clients);
        if (clientCount is < 1 or > 1024)
        {
            throw new CliException("--clients must be between 1 and 1024");
        }

        var opsLimit = parse.GetValue(ops);
        var runFor = parse.GetValue(duration);
        if (opsLimit is < 1)
        {
            throw new CliException("--ops must be at least 1");
        }

        if (opsLimit is not null && runFor is not null)
        {
            throw new CliException("give --ops or --duration, not both");
        }

        if (runFor is { } d && d <= TimeSpan.Zero)
        {
            throw new CliException("--duration must be positive");
        }

        if (!TryParseOps(parse.GetValue(op) ?? string.Empty, out var opList, out var opError))
        {
            throw new CliException(opError);
        }

        var peerList = new List<BenchPeer>();
        foreach (var text in parse.GetValue(peers) ?? [])
        {
            if (!BenchPeer.TryParse(text, out var peer, out var peerError))
            {
                throw new CliException($"--vs: {peerError}");
            }

            if (peerList.Exists(p => p.Name == peer!.Name))
            {
                throw new CliException($"--vs: peer name '{peer!.Name}' is given twice");
            }

            peerList.Add(peer!);
        }

        return new BenchSettings(
            bytes,
            clientCount,
            opsLimit,
            opsLimit is null ? runFor ?? TimeSpan.FromSeconds(10) : null,
            parse.GetValue(warmup) ?? TimeSpan.FromSeconds(1),
            opList,
            peerList,
            parse.GetValue(json),
            parse.GetValue(metadata));
    }

    private static async Task<PocketCluster> StartEmbeddedAsync(long nodeCapacity, CancellationToken cancellationToken)
    {
        Status($"starting an embedded cluster: {EmbeddedNodes} nodes of {Units.FormatSize(nodeCapacity)}");
        var cluster = await PocketCluster.StartAsync(
            new PocketClusterOptions { StorageNodes = EmbeddedNodes, NodeCapacity = nodeCapacity, BlockSize = EmbeddedBlockSize },
            cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            // Nodes pre-fault their memory in the background while serving; timing before that finishes would
            // charge Pocket for page faults that a warm node never takes.
            var devices = cluster.Nodes.Select(n => n?.Store.Device).OfType<NativeMemoryDevice>().ToList();
            var clock = Stopwatch.StartNew();
            while (devices.Any(d => d.TouchedBytes < d.Capacity))
            {
                if (clock.Elapsed > TimeSpan.FromMinutes(5))
                {
                    throw new CliException("node memory is still not pre-faulted after 5 minutes");
                }

                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }

            Status(string.Create(CultureInfo.InvariantCulture, $"node memory pre-faulted in {clock.Elapsed.TotalSeconds:0.0} s"));
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<PocketJob> RegisterAsync(PocketClient client, CancellationToken cancellationToken)
    {
        try
        {
            return await client.RegisterJobAsync("bench", cancellationToken).ConfigureAwait(false);
        }
        catch (PocketUnauthorizedException ex)
        {
            throw new CliException($"the bench registers its own job, which needs the cluster token: set {ClusterConnection.TokenVariable} ({ex.Message})", ex);
        }
    }

    private static async Task DeregisterQuietlyAsync(PocketClient client, string jobId)
    {
        try
        {
            await client.DeregisterJobAsync(jobId, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException)
        {
            // The job's lease reclaims it; the bench result matters more than a failed clean-up.
            CommandRunner.Error.MarkupLine($"[yellow]warning:[/] could not deregister bench job {Markup.Escape(jobId)}: {Markup.Escape(ex.Message)}");
        }
    }

    /// <summary>
    /// Live data per round and keys to read, from the room the cluster has: a quarter of its free capacity,
    /// at most 1 GiB (64 MiB for small objects, which live inline in the metadata server).
    /// </summary>
    private static async Task<BenchPlan> PlanAsync(BenchSettings settings, PocketClient client, CancellationToken cancellationToken)
    {
        var nodes = await client.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        var free = nodes.Where(n => n.State == NodeState.Live).Sum(n => Math.Max(0, n.Capacity - n.Used));
        var small = settings.Size <= Math.Min(client.Options.SmallObjectThreshold, ProtocolLimits.Default.MaxSmallObject);
        var footprint = small ? settings.Size : RoundUp(settings.Size, EmbeddedBlockSize);
        var budget = Math.Min(free / 4, small ? 64L << 20 : 1L << 30);
        budget = Math.Max(budget, footprint * settings.Clients);
        var perRound = (int)Math.Clamp(budget / (footprint * settings.Clients), 1, 4096);
        var pool = (int)Math.Clamp(budget / footprint, 1, 1024);
        if (settings.OpsLimit is { } n)
        {
            pool = (int)Math.Min(pool, Math.Max(n, settings.Clients));
        }

        return new BenchPlan(settings.Size, settings.Clients, settings.OpsLimit, settings.Duration, settings.Warmup, perRound, pool);
    }

    private static bool TryParseOps(string text, out List<BenchOp> ops, out string error)
    {
        ops = [];
        error = string.Empty;
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var name = part.ToLowerInvariant();
            IEnumerable<BenchOp>? named = name == "meta"
                ? BenchOps.Meta
                : Enum.GetValues<BenchOp>().Where(o => o.Name() == name).ToList() is [var one] ? [one] : null;
            if (named is null)
            {
                error = $"--op '{part}' is not put, get, mixed, meta, lookup, create_delete, list100 or count";
                return false;
            }

            foreach (var op in named)
            {
                if (!ops.Contains(op))
                {
                    ops.Add(op);
                }
            }
        }

        if (ops.Count == 0)
        {
            error = "--op needs put, get, mixed or meta";
            return false;
        }

        return true;
    }

    private static long RoundUp(long value, long unit) => (value + unit - 1) / unit * unit;

    private static void Status(string message) => CommandRunner.Error.MarkupLine($"[grey]{Markup.Escape(message)}[/]");

    private sealed record BenchSettings(long Size, int Clients, long? OpsLimit, TimeSpan? Duration, TimeSpan Warmup, List<BenchOp> Ops, List<BenchPeer> Peers, bool Json, string? Metadata);
}
