using System.CommandLine;
using System.Globalization;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.LoadGenerator;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench`: the same workload through Pocket and each --vs peer, in one process and one run,
/// interleaved per operation (pocket, then each peer), so that only same-run ratios are compared.
/// </summary>
internal static class BenchCommand
{
    private const int OwnNodes = 2;
    private const int OwnBlockSize = 64 << 10;

    /// <summary>The highest --rate: far above what one machine's load generator sends (a slot every 100 ns).</summary>
    private const double MaxRate = 10_000_000;

    /// <summary>--small-object-threshold, shared by `pocket bench` and `pocket bench cold`.</summary>
    internal static Option<long?> SmallObjectThresholdOption() => new("--small-object-threshold")
    {
        Description = "Pocket objects up to this size go inline through the metadata server (default: the client's, 64 KiB); 0 sends every object to the storage nodes, to measure a tier with small objects",
        HelpName = "SIZE",
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
            if (Units.TryParseBytes(text, out var bytes) && bytes >= 0 && bytes <= ProtocolLimits.Default.MaxSmallObject)
            {
                return bytes;
            }

            result.AddError($"--small-object-threshold '{text}' is not a size from 0 to {Units.FormatBytes(ProtocolLimits.Default.MaxSmallObject)}");
            return null;
        },
    };

    public static Command Create()
    {
        var size = CommandRunner.SizeOption("--size", 1 << 10, "Object size");
        var clients = new Option<int>("--clients") { Description = "Concurrent clients, each issuing sequential operations", DefaultValueFactory = _ => 1 };
        var connections = new Option<int?>("--connections")
        {
            Description = "N independent clients, each with its own connection (its own PocketClient; its own RESP connection to each --vs peer), one request outstanding each, all connecting at once; replaces --clients",
            HelpName = "N",
        };
        var processes = new Option<int?>("--processes")
        {
            Description = "With --connections: spread the N clients over P worker processes (child `pocket` processes, each its own share of the connections; results merged), so the load generator is not one process",
            HelpName = "P",
        };
        var rate = new Option<string?>("--rate")
        {
            Description = "Open loop: offer this many ops/s over all clients (and --processes), each client's requests on a fixed schedule; latency counts from the scheduled time, and the send lag (actual send - scheduled) is reported. Default: closed loop, each client sending as soon as its reply lands",
            HelpName = "OPS_PER_S",
        };
        var ops = new Option<long?>("--ops") { Description = "Timed operations per system and op, over all clients", HelpName = "N" };
        var duration = CommandRunner.DurationOption("--duration", "Timed run per system and op (default 10s unless --ops is given)");
        var warmup = CommandRunner.DurationOption("--warmup", "Untimed warm-up before each timed run (default 1s)");
        var slices = new Option<int?>("--slices")
        {
            Description = $"Split each system's --duration into K slices run in turn with the other systems' (the first system rotating each slice), so that all meet the same phases of a noisy machine; each system's first slice follows its --warmup, every later one a warm-up of at most {Units.FormatDuration(BenchPlan.MostSliceWarmup)} (default 1: each system's whole run at once)",
            HelpName = "K",
        };
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
        var job = new Option<string?>("--job")
        {
            Description = "Run in this job of $POCKET_HOME/jobs.json (under a prefix of its own, removed afterwards; its lease is renewed while the bench runs) instead of registering and removing a job",
            HelpName = "ID",
        };
        var inline = SmallObjectThresholdOption();
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var cluster = ClusterOptions.Create();
        var command = new Command("bench", "Measure latency and throughput of put/get, side by side with other systems")
        {
            size, clients, connections, processes, rate, ops, duration, warmup, slices, op, peers, job, inline, json, metadata, cluster.Tier, cluster.DataDir, cluster.InProcess, cluster.NodeCapacity,
        };
        CommandRunner.SetAction(command, (parse, ct) => RunAsync(Validate(parse, size, clients, connections, processes, rate, ops, duration, warmup, slices, op, peers, job, inline, json, metadata, cluster), ct));
        command.Subcommands.Add(BenchSortCommand.Create());
        command.Subcommands.Add(BenchElasticCommand.Create());
        command.Subcommands.Add(BenchColdCommand.Create());
        command.Subcommands.Add(BenchWorkerCommand.Create());
        return command;
    }

    /// <summary>The options of the cluster a bench starts for itself, shared with `bench sort`.</summary>
    internal sealed record ClusterOptions(Option<NodeTier> Tier, Option<string?> DataDir, Option<bool> InProcess, Option<long?> NodeCapacity)
    {
        public static ClusterOptions Create()
        {
            var tier = CommandRunner.TierOption("--tier", "Tier of the storage nodes of the bench's own cluster");
            var dataDir = new Option<string?>("--data-dir") { Description = "Where ssd and hdd nodes of the bench's own cluster keep their files (a fresh directory inside it, removed afterwards; default: the temp directory)", HelpName = "DIR" };
            var inProcess = new Option<bool>("--in-process") { Description = "Run the bench's own cluster in the bench process (server CPU is then not measured)" };
            var nodeCapacity = new Option<long?>("--node-capacity")
            {
                Description = "Bytes of each of the 2 storage nodes of the bench's own cluster (default: sized from the workload)",
                HelpName = "SIZE",
                CustomParser = result =>
                {
                    var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
                    if (Units.TryParseBytes(text, out var bytes) && bytes >= 16L << 20)
                    {
                        return bytes;
                    }

                    result.AddError($"--node-capacity '{text}' is not a size of at least 16 MiB (examples: 256MiB, 4GiB)");
                    return null;
                },
            };
            return new ClusterOptions(tier, dataDir, inProcess, nodeCapacity);
        }

        /// <summary>The node size given, rounded up to whole blocks, else <paramref name="sized"/>.</summary>
        public long NodeCapacityOf(ParseResult parse, long sized) =>
            parse.GetValue(NodeCapacity) is { } given ? RoundUp(given, OwnBlockSize) : sized;

        /// <summary>These options only shape a cluster the bench starts: with one given, they would be silently ignored.</summary>
        public void CheckUnused(ParseResult parse, string why)
        {
            foreach (var option in new Option[] { Tier, DataDir, InProcess, NodeCapacity })
            {
                if (parse.GetResult(option) is { Implicit: false })
                {
                    throw new CliException($"{option.Name} shapes the bench's own cluster; {why}");
                }
            }
        }
    }

    private static async Task<int> RunAsync(BenchSettings settings, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var nodeCapacity = settings.NodeCapacity ?? RoundUp(Math.Max(1L << 30, settings.Size * settings.Clients * 4), OwnBlockSize);
        var session = await BenchSession.OpenAsync(
            settings.Metadata,
            settings.Job,
            new BenchClusterOptions(OwnNodes, nodeCapacity, OwnBlockSize, settings.Tier, settings.DataDirectory, settings.InProcess),
            settings.SmallObjectThreshold,
            cancellationToken).ConfigureAwait(false);
        List<BenchResult> results = [];
        List<FanInSummary> fanIn = [];
        void Done(BenchResult result)
        {
            results.Add(result);
            Status(string.Create(CultureInfo.InvariantCulture,
                $"{result.System} {result.Op.Name()}: {result.Ops} ops, p50 {result.PercentileMicros(50)} us, p99 {result.PercentileMicros(99)} us, {result.OpsPerSecond:0.##} ops/s, {result.MiBPerSecond:0.0} MiB/s"));
            if (result.BelowOffered && settings.Json)
            {
                // The table says it below itself; JSON readers get it in the figures and here.
                CommandRunner.Error.MarkupLine($"[yellow]{Markup.Escape(BenchReport.BelowOfferedWarning(result))}[/]");
            }
        }

        BenchPlan plan;
        BenchContext context;
        await using (session.ConfigureAwait(false))
        {
            var targets = new List<IBenchTarget> { new PocketBenchTarget(session.Job, session.Root, session.CpuScope, session.CpuSeconds) };
            try
            {
                foreach (var peer in settings.Peers)
                {
                    Status($"connecting to {peer.Name} at {peer.Host}:{peer.Port}");
                    targets.Add(await RedisBenchTarget.ConnectAsync(peer, Warn, cancellationToken).ConfigureAwait(false));
                }

                plan = await PlanAsync(settings, session.Client, session.Admin, cancellationToken).ConfigureAwait(false);
                if (settings.Connections)
                {
                    await OpenConnectionsAsync(settings, plan, session, targets, cancellationToken).ConfigureAwait(false);
                }

                var runner = new BenchRunner(plan, settings.Ops.Any(o => o.ReadsData()), Status);
                foreach (var op in settings.Ops)
                {
                    if (plan.Slices > 1)
                    {
                        foreach (var result in await runner.RunSlicedAsync(targets, op, cancellationToken).ConfigureAwait(false))
                        {
                            Done(result);
                        }

                        continue;
                    }

                    foreach (var target in targets)
                    {
                        Done(await runner.RunAsync(target, op, cancellationToken).ConfigureAwait(false));
                    }
                }
            }
            finally
            {
                fanIn =
                [
                    .. targets.OfType<FanInBenchTarget>().Select(t => new FanInSummary(t.Name, t.Connections, t.ConnectMs, t.Refused, t.Refusal, 1, [t.ConnectMs])),
                    .. targets.OfType<WorkerFleet>().Select(t => new FanInSummary(t.Name, t.Connections, t.ConnectMs, t.Refused, t.Refusal, t.Processes, t.ConnectMsPerProcess)),
                ];
                foreach (var target in targets)
                {
                    await target.DisposeAsync().ConfigureAwait(false);
                }
            }

            context = new BenchContext(session.Where, session.Job.Id, session.JobGiven, session.OwnCluster?.Tier, session.OwnCluster?.NodeCapacity, session.Client.Options.SmallObjectThreshold, started);
        }

        if (settings.Json)
        {
            var report = BenchReport.ToJson(results, plan, context, settings.Peers);
            if (settings.Connections)
            {
                AddFanIn(report, fanIn);
            }

            CommandRunner.WriteJson(report);
        }
        else
        {
            BenchReport.WriteTable(results, plan, context);
        }

        return 0;
    }

    /// <summary>
    /// Replaces each target by one whose clients each have their own connection, opened all at once per system
    /// (Pocket first, then each peer), so the connect time of each is measured alone; with --processes, the
    /// connections of each system are spread over worker processes.
    /// </summary>
    private static async Task OpenConnectionsAsync(BenchSettings settings, BenchPlan plan, BenchSession session, List<IBenchTarget> targets, CancellationToken cancellationToken)
    {
        for (var i = 0; i < targets.Count; i++)
        {
            var shared = targets[i];
            var peer = shared is RedisBenchTarget ? settings.Peers[i - 1] : null;
            if (settings.Processes > 1)
            {
                Status(string.Create(CultureInfo.InvariantCulture, $"{shared.Name}: starting {settings.Processes} worker processes for {settings.Clients} connections"));
                var fleet = await StartWorkersAsync(settings, plan, session, shared, peer, cancellationToken).ConfigureAwait(false);
                targets[i] = fleet;
                Status(string.Create(CultureInfo.InvariantCulture,
                    $"{shared.Name}: {fleet.Connections} connections in {fleet.ConnectMs:0} ms ({string.Join(", ", fleet.ConnectMsPerProcess.Select(ms => ms.ToString("0", CultureInfo.InvariantCulture)))} ms per process), {fleet.Refused} refused"));
                if (fleet.Refusal is { } why)
                {
                    Status($"{shared.Name}: the first refused connection: {why}");
                }

                continue;
            }

            Status(string.Create(CultureInfo.InvariantCulture, $"{shared.Name}: opening {settings.Clients} connections"));
            var fanIn = await FanInBenchTarget.ConnectAsync(shared, settings.Clients, ct => ConnectOneAsync(shared, peer, session, ct), cancellationToken).ConfigureAwait(false);
            targets[i] = fanIn;
            Status(string.Create(CultureInfo.InvariantCulture, $"{shared.Name}: {fanIn.Connections} connections in {fanIn.ConnectMs:0} ms, {fanIn.Refused} refused"));
            if (fanIn.Refusal is { } refusal)
            {
                Status($"{shared.Name}: the first refused connection: {refusal}");
            }
        }
    }

    /// <summary>`pocket bench worker` children of this build, each told (on its stdin) its share and how to reach the system.</summary>
    private static Task<WorkerFleet> StartWorkersAsync(BenchSettings settings, BenchPlan plan, BenchSession session, IBenchTarget shared, BenchPeer? peer, CancellationToken cancellationToken)
    {
        var (executable, baseArguments) = LocalProcessProvisionerOptions.CurrentProgram();
        var (trustFile, tlsName) = ClientTls.GivenOptions;
        return WorkerFleet.StartAsync(
            shared,
            executable,
            [.. baseArguments, "bench", "worker"],
            settings.Processes,
            settings.Clients,
            plan.Ops,
            (worker, connections, ops) => new BenchWorkerSpec(
                worker,
                connections,
                plan.Size,
                ops,
                plan.SliceDuration?.TotalSeconds,
                plan.Warmup.TotalSeconds,
                plan.KeysPerRound,
                plan.PoolKeys,
                settings.Ops.Any(o => o.ReadsData()),
                peer is null ? session.Root : ((RedisBenchTarget)shared).Root,
                Resp: peer is null ? null : $"{peer.Name}={peer.Url}",
                Metadata: peer is null ? session.MetadataAddress : null,
                JobId: peer is null ? session.Job.Id : null,
                JobToken: peer is null ? session.Job.Token.ToString() : null,
                SmallObjectThreshold: session.Client.Options.SmallObjectThreshold,
                TlsTrustFile: trustFile,
                TlsName: tlsName,
                Rate: plan.Rate is { } rate ? rate * connections / settings.Clients : null),
            cancellationToken);
    }

    /// <summary>One more connection of <paramref name="shared"/>'s system: a PocketClient of its own, or a RESP connection.</summary>
    private static async Task<(IBenchTarget Target, IAsyncDisposable Owner)> ConnectOneAsync(IBenchTarget shared, BenchPeer? peer, BenchSession session, CancellationToken cancellationToken)
    {
        if (shared is RedisBenchTarget resp && peer is not null)
        {
            return await resp.ConnectAnotherAsync(peer, cancellationToken).ConfigureAwait(false);
        }

        var client = await session.ConnectAnother(cancellationToken).ConfigureAwait(false);
        return (new PocketBenchTarget(client.OpenJob(session.Job.Id, session.Job.Token), session.Root, session.CpuScope, session.CpuSeconds), client);
    }

    private static void AddFanIn(System.Text.Json.Nodes.JsonObject report, List<FanInSummary> fanIn)
    {
        var systems = new System.Text.Json.Nodes.JsonObject();
        foreach (var f in fanIn)
        {
            systems[f.System] = new System.Text.Json.Nodes.JsonObject
            {
                ["connections"] = f.Connections,
                ["processes"] = f.Processes,
                // With several processes: the storm's wall time, its slowest process (all start on one command).
                ["connect_ms"] = Math.Round(f.ConnectMs, 1),
                ["connect_ms_per_process"] = new System.Text.Json.Nodes.JsonArray([.. f.ConnectMsPerProcess.Select(ms => (System.Text.Json.Nodes.JsonNode)Math.Round(ms, 1))]),
                ["refused"] = f.Refused,
                // Why the first refused connection could not be opened (null when none was).
                ["refusal"] = f.Refusal,
                // A failed request stops the bench with an error and no report: a report always has 0.
                ["failed"] = 0,
            };
        }

        report["fan_in"] = systems;
    }

    /// <summary>
    /// A cluster the bench did not start: its servers' CPU is read from /proc when every one of them (the metadata
    /// server and each live storage node) listens on a loopback port of a process of this machine other than the
    /// bench's own; otherwise it is not measured, and the report says why.
    /// </summary>
    internal static async Task<(string Scope, Func<double?> Seconds)> ExistingClusterCpuAsync(PocketAdminClient admin, string metadata, CancellationToken cancellationToken)
    {
        static (string Host, int Port)? Split(string address)
        {
            var colon = address.LastIndexOf(':');
            return colon > 0 && int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port)
                ? (address[..colon], port)
                : null;
        }

        var addresses = new List<string> { metadata };
        addresses.AddRange((await admin.GetNodesAsync(cancellationToken).ConfigureAwait(false)).Where(n => n.State == NodeState.Live).Select(n => n.Address));
        var pids = new List<int>();
        foreach (var address in addresses)
        {
            if (Split(address) is not var (host, port) || !ProcStat.IsLoopback(host))
            {
                return ($"not measured: {address} is not on this machine's loopback", () => null);
            }

            if (ProcStat.ListenerPid(host, port) is not { } pid)
            {
                return ($"not measured: no process of this machine found listening on {address}", () => null);
            }

            if (pid == Environment.ProcessId)
            {
                return ("not measured: the cluster runs in the bench process", () => null);
            }

            if (!pids.Contains(pid))
            {
                pids.Add(pid);
            }
        }

        return ($"server processes {string.Join(", ", pids)} (/proc, 10 ms ticks)", () => ProcStat.CpuSeconds(pids));
    }

    /// <summary>
    /// Checked here rather than in a command validator: in System.CommandLine 2.0 such a validator reads
    /// options left at their defaults as zero.
    /// </summary>
    private static BenchSettings Validate(ParseResult parse, Option<long> size, Option<int> clients, Option<int?> connections, Option<int?> processes, Option<string?> rate, Option<long?> ops, Option<TimeSpan?> duration, Option<TimeSpan?> warmup, Option<int?> slices, Option<string> op, Option<string[]> peers, Option<string?> job, Option<long?> inline, Option<bool> json, Option<string?> metadata, ClusterOptions cluster)
    {
        var jobId = parse.GetValue(job);
        if (jobId is not null)
        {
            cluster.CheckUnused(parse, "--job runs on the job's cluster");
        }
        else if (!string.IsNullOrWhiteSpace(parse.GetValue(metadata)))
        {
            cluster.CheckUnused(parse, "--metadata runs on that cluster");
        }

        var bytes = parse.GetValue(size);
        if (bytes < 1 || bytes > Array.MaxLength)
        {
            throw new CliException($"--size must be between 1 byte and {Units.FormatBytes(Array.MaxLength)}");
        }

        var clientCount = parse.GetValue(clients);
        if (clientCount is < 1 or > 1024)
        {
            throw new CliException("--clients must be between 1 and 1024");
        }

        var connectionCount = parse.GetValue(connections);
        if (connectionCount is { } n)
        {
            if (parse.GetResult(clients) is { Implicit: false })
            {
                throw new CliException("give --clients (callers sharing one client) or --connections (a client each), not both");
            }

            if (n is < 1 or > 100_000)
            {
                throw new CliException("--connections must be between 1 and 100000");
            }

            clientCount = n;
        }

        var processCount = parse.GetValue(processes);
        if (processCount is { } p)
        {
            if (connectionCount is null)
            {
                throw new CliException("--processes spreads --connections over processes: give --connections N too");
            }

            if (p < 1 || p > Math.Min(64, clientCount))
            {
                throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--processes must be between 1 and {Math.Min(64, clientCount)} (at most 64, and at most one per connection)"));
            }
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

        var sliceCount = parse.GetValue(slices) ?? 1;
        if (sliceCount is < 1 or > BenchPlan.MaxSlices)
        {
            throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--slices must be between 1 and {BenchPlan.MaxSlices}"));
        }

        if (sliceCount > 1 && opsLimit is not null)
        {
            throw new CliException("--slices splits the --duration of each run; give --duration, not --ops");
        }

        var timed = opsLimit is null ? runFor ?? TimeSpan.FromSeconds(10) : (TimeSpan?)null;
        if (sliceCount > 1 && timed / sliceCount < BenchPlan.MinSliceDuration)
        {
            throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--slices {sliceCount} leaves {Units.FormatDuration(timed!.Value / sliceCount)} a slice; a slice needs at least {Units.FormatDuration(BenchPlan.MinSliceDuration)}: give a longer --duration or fewer slices"));
        }

        if (!TryParseOps(parse.GetValue(op) ?? string.Empty, out var opList, out var opError))
        {
            throw new CliException(opError);
        }

        double? offered = null;
        if (parse.GetValue(rate) is { } rateText)
        {
            if (!double.TryParse(rateText, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) || !double.IsFinite(r) || r <= 0 || r > MaxRate)
            {
                throw new CliException(string.Create(CultureInfo.InvariantCulture, $"--rate '{rateText}' is not a rate in ops/s above 0 and at most {MaxRate:0} (examples: 2000, 40000)"));
            }

            if (opList.FirstOrDefault(o => o.IsMeta()) is var meta && meta.IsMeta())
            {
                throw new CliException($"--rate paces put, get and mixed; '{meta.Name()}' runs closed-loop only");
            }

            offered = r;
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
            connectionCount is not null,
            processCount ?? 1,
            opsLimit,
            timed,
            parse.GetValue(warmup) ?? TimeSpan.FromSeconds(1),
            opList,
            peerList,
            parse.GetValue(json),
            parse.GetValue(metadata),
            jobId,
            parse.GetValue(cluster.Tier),
            parse.GetValue(cluster.DataDir),
            parse.GetValue(cluster.InProcess),
            parse.GetValue(cluster.NodeCapacity) is null ? null : cluster.NodeCapacityOf(parse, 0),
            parse.GetValue(inline) is { } threshold ? (int)threshold : null,
            offered,
            sliceCount);
    }

    /// <summary>
    /// Live data per round and keys to read, from the room the cluster has: a quarter of its free capacity,
    /// at most 1 GiB (64 MiB for small objects, which live inline in the metadata server).
    /// </summary>
    private static async Task<BenchPlan> PlanAsync(BenchSettings settings, PocketClient client, PocketAdminClient admin, CancellationToken cancellationToken)
    {
        var nodes = await admin.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        var free = nodes.Where(n => n.State == NodeState.Live).Sum(n => Math.Max(0, n.Capacity - n.Used));
        var small = settings.Size <= Math.Min(client.Options.SmallObjectThreshold, ProtocolLimits.Default.MaxSmallObject);
        var footprint = small ? settings.Size : RoundUp(settings.Size, OwnBlockSize);
        var budget = Math.Min(free / 4, small ? 64L << 20 : 1L << 30);
        budget = Math.Max(budget, footprint * settings.Clients);
        var perRound = (int)Math.Clamp(budget / (footprint * settings.Clients), 1, 4096);
        var pool = (int)Math.Clamp(budget / footprint, 1, 1024);
        if (settings.OpsLimit is { } n)
        {
            pool = (int)Math.Min(pool, Math.Max(n, settings.Clients));
        }

        return new BenchPlan(settings.Size, settings.Clients, settings.OpsLimit, settings.Duration, settings.Warmup, perRound, pool, settings.Rate, settings.Slices);
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

    internal static long RoundUp(long value, long unit) => (value + unit - 1) / unit * unit;

    internal static void Status(string message) => CommandRunner.Error.MarkupLine($"[grey]{Markup.Escape(message)}[/]");

    internal static void Warn(string message) => CommandRunner.Error.MarkupLine($"[yellow]warning:[/] {Markup.Escape(message)}");

    /// <summary>One system's connections for the report's fan_in object.</summary>
    private sealed record FanInSummary(string System, int Connections, double ConnectMs, int Refused, string? Refusal, int Processes, IReadOnlyList<double> ConnectMsPerProcess);

    private sealed record BenchSettings(long Size, int Clients, bool Connections, int Processes, long? OpsLimit, TimeSpan? Duration, TimeSpan Warmup, List<BenchOp> Ops, List<BenchPeer> Peers, bool Json, string? Metadata, string? Job, NodeTier Tier, string? DataDirectory, bool InProcess, long? NodeCapacity, int? SmallObjectThreshold, double? Rate, int Slices);
}
