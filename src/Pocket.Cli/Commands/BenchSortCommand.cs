using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.LoadGenerator;
using Pocket.LoadGenerator.Sort;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench sort`: the map/shuffle/reduce sort of `pocket demo` through each shuffle store in turn (Pocket,
/// Redis, Garnet, a local directory), with the same generated records, the same functions (tasks in this process)
/// and the same verification, reporting job completion time and the bytes each store moved.
/// </summary>
internal static class BenchSortCommand
{
    private const long MaxPartBytes = 1L << 30;

    /// <summary>Records of the untimed warm-up sort each store runs first (1 MiB of them).</summary>
    private const long WarmupRecords = (1 << 20) / SortRecords.RecordSize;

    private static readonly Dictionary<string, string> DefaultResp = new(StringComparer.Ordinal)
    {
        ["redis"] = "resp://127.0.0.1:6379",
        ["garnet"] = "resp://127.0.0.1:3278",
    };

    private sealed record SortSettings(
        List<string> Stores, long Size, int Mappers, int Reducers, ulong Seed, Dictionary<string, BenchPeer> Resp, string? Dir,
        string? Metadata, BenchClusterOptions Cluster, bool Json);

    /// <summary>One store's run: the sort's report, what went through the store, and the server's CPU.</summary>
    private sealed record StoreRun(string Store, string Where, SortReport Report, long BytesWritten, long BytesRead, long Puts, long Gets, double? ServerCpuSeconds, string CpuScope)
    {
        /// <summary>The job itself: the map and reduce stages (generating the input and checking the output are the driver's).</summary>
        public double JobSeconds => Report.Phases.Where(p => p.Name is SortDemo.Map or SortDemo.Reduce).Sum(p => p.Seconds);
    }

    public static Command Create()
    {
        var stores = new Option<string[]>("--store")
        {
            Description = "pocket, redis, garnet, dir, or a name given with --resp; repeat it or give a comma list to run several, one after another",
            HelpName = "pocket|redis|garnet|dir",
            Arity = ArgumentArity.OneOrMore,
            Required = true,
        };
        var size = CommandRunner.SizeOption("--size", 256L << 20, "Bytes of records to sort (100-byte records, 10-byte keys)");
        var mappers = new Option<int>("--mappers") { Description = "Map functions (one input object each)", DefaultValueFactory = _ => 8, HelpName = "M" };
        var reducers = new Option<int>("--reducers") { Description = "Reduce functions (one output object each)", DefaultValueFactory = _ => 8, HelpName = "R" };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of the generated records, the same for every store (default: a random one, printed)" };
        var resp = new Option<string[]>("--resp")
        {
            Description = $"Address of a RESP store (default {string.Join(", ", DefaultResp.Select(p => $"{p.Key}={p.Value}"))})",
            HelpName = "NAME=resp://HOST:PORT",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var dir = new Option<string?>("--dir") { Description = "Directory under which the dir store makes (and removes) its own (default: the temp directory)", HelpName = "PATH" };
        var json = CommandRunner.JsonOption();
        var metadata = CommandRunner.MetadataOption();
        var cluster = BenchCommand.ClusterOptions.Create();
        var command = new Command("sort", "Run the sort of `pocket demo` through Pocket, Redis, Garnet or a directory as the shuffle store, and compare")
        {
            stores, size, mappers, reducers, seed, resp, dir, json, metadata, cluster.Tier, cluster.DataDir, cluster.InProcess, cluster.NodeCapacity,
        };
        CommandRunner.SetAction(command, (parse, ct) => RunAsync(Validate(parse, stores, size, mappers, reducers, seed, resp, dir, json, metadata, cluster), ct));
        return command;
    }

    private static SortSettings Validate(
        ParseResult parse, Option<string[]> stores, Option<long> size, Option<int> mappers, Option<int> reducers, Option<ulong?> seed,
        Option<string[]> resp, Option<string?> dir, Option<bool> json, Option<string?> metadata, BenchCommand.ClusterOptions cluster)
    {
        var peers = new Dictionary<string, BenchPeer>(StringComparer.Ordinal);
        foreach (var (name, url) in DefaultResp)
        {
            BenchPeer.TryParse($"{name}={url}", out var peer, out _);
            peers[name] = peer!;
        }

        foreach (var text in parse.GetValue(resp) ?? [])
        {
            if (!BenchPeer.TryParse(text, out var peer, out var error))
            {
                throw new CliException($"--resp: {error}");
            }

            if (peer!.Name is "dir")
            {
                throw new CliException("--resp: 'dir' is the directory store's name");
            }

            peers[peer.Name] = peer;
        }

        var list = new List<string>();
        foreach (var name in (parse.GetValue(stores) ?? []).SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            var store = name.ToLowerInvariant();
            if (store is not ("pocket" or "dir") && !peers.ContainsKey(store))
            {
                throw new CliException($"--store '{name}' is not pocket, redis, garnet, dir or a name given with --resp NAME=resp://HOST:PORT");
            }

            if (list.Contains(store))
            {
                throw new CliException($"--store '{store}' is given twice");
            }

            list.Add(store);
        }

        if (list.Count == 0)
        {
            throw new CliException("--store needs pocket, redis, garnet or dir");
        }

        var bytes = parse.GetValue(size);
        var (m, r) = (parse.GetValue(mappers), parse.GetValue(reducers));
        if (m is < 1 or > 1024 || r is < 1 or > 1024)
        {
            throw new CliException("--mappers and --reducers must be between 1 and 1024");
        }

        if (bytes < SortRecords.RecordSize)
        {
            throw new CliException($"--size must be at least one record ({SortRecords.RecordSize} bytes)");
        }

        if (bytes / Math.Min(m, r) > MaxPartBytes)
        {
            throw new CliException($"each function would hold more than {Units.FormatBytes(MaxPartBytes)}: use more --mappers/--reducers or a smaller --size");
        }

        var metadataAddress = parse.GetValue(metadata);
        if (!list.Contains("pocket"))
        {
            cluster.CheckUnused(parse, "no --store pocket is run");
        }
        else if (!string.IsNullOrWhiteSpace(metadataAddress))
        {
            cluster.CheckUnused(parse, "--metadata runs on that cluster");
        }

        // The job stores input, shuffle and output at once: three times the data over two nodes, with room to spare.
        const long Unit = 64L << 20;
        var nodeCapacity = cluster.NodeCapacityOf(parse, BenchCommand.RoundUp(Math.Max(256L << 20, bytes * 3 * 5 / 8), Unit));
        return new SortSettings(
            list,
            bytes,
            m,
            r,
            parse.GetValue(seed) ?? (ulong)Random.Shared.NextInt64(),
            peers,
            parse.GetValue(dir),
            metadataAddress,
            new BenchClusterOptions(2, nodeCapacity, 64 << 10, parse.GetValue(cluster.Tier), parse.GetValue(cluster.DataDir), parse.GetValue(cluster.InProcess)),
            parse.GetValue(json));
    }

    private static async Task<int> RunAsync(SortSettings settings, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var plan = new SortPlan(settings.Size / SortRecords.RecordSize, settings.Mappers, settings.Reducers, settings.Seed);
        BenchCommand.Status(string.Create(CultureInfo.InvariantCulture,
            $"sorting {Units.FormatBytes(plan.Bytes)} ({plan.Records:N0} records, seed {plan.Seed}) with {plan.Mappers} mappers and {plan.Reducers} reducers through {string.Join(", ", settings.Stores)}"));
        var runs = new List<StoreRun>();
        foreach (var store in settings.Stores)
        {
            var run = store switch
            {
                "pocket" => await RunPocketAsync(settings, plan, cancellationToken).ConfigureAwait(false),
                "dir" => await RunDirAsync(settings, plan, cancellationToken).ConfigureAwait(false),
                _ => await RunRespAsync(settings.Resp[store], plan, cancellationToken).ConfigureAwait(false),
            };
            runs.Add(run);
            BenchCommand.Status(string.Create(CultureInfo.InvariantCulture,
                $"{store}: job {run.JobSeconds:0.00} s (map + reduce), {Units.FormatBytes(run.BytesWritten + run.BytesRead)} through the store, {(run.Report.Verified ? "verified" : "NOT verified")}"));
        }

        if (settings.Json)
        {
            CommandRunner.WriteJson(ToJson(runs, settings, plan, started));
        }
        else
        {
            WriteTable(runs, plan);
        }

        var wrong = runs.Where(r => !r.Report.Verified).ToList();
        if (wrong.Count > 0)
        {
            CommandRunner.Fail($"the sort is wrong on {string.Join(", ", wrong.Select(r => $"{r.Store} ({r.Report.Problem ?? "checksums differ"})"))}");
            return 1;
        }

        return 0;
    }

    private static async Task<StoreRun> RunPocketAsync(SortSettings settings, SortPlan plan, CancellationToken cancellationToken)
    {
        var session = await BenchSession.OpenAsync(settings.Metadata, jobId: null, settings.Cluster, smallObjectThreshold: null, cancellationToken).ConfigureAwait(false);
        await using (session.ConfigureAwait(false))
        {
            var cpu = session.CpuSeconds;
            return await SortAsync("pocket", $"{session.Where}, job {session.Job.Id}", new PocketShuffleStore(session.Job), plan, session.CpuScope, () => Task.FromResult(cpu()), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task<StoreRun> RunDirAsync(SortSettings settings, SortPlan plan, CancellationToken cancellationToken)
    {
        var store = new DirectoryShuffleStore(settings.Dir ?? Path.GetTempPath());
        try
        {
            return await SortAsync("dir", store.Description, store, plan, "no server: files through the page cache, in this process", () => Task.FromResult<double?>(null), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await store.ClearAsync().ConfigureAwait(false);
        }
    }

    private static async Task<StoreRun> RunRespAsync(BenchPeer peer, SortPlan plan, CancellationToken cancellationToken)
    {
        BenchCommand.Status($"connecting to {peer.Name} at {peer.Host}:{peer.Port}");
        var connection = await RespShuffleConnection.ConnectAsync(peer, cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            return await SortAsync(peer.Name, peer.Url, connection.Store, plan, connection.CpuScope ?? "not measured: the server is not on this machine and has no INFO cpu", connection.CpuSecondsAsync, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task<StoreRun> SortAsync(string name, string where, IShuffleStore store, SortPlan plan, string cpuScope, Func<Task<double?>> cpuSeconds, CancellationToken cancellationToken)
    {
        // A small sort first, untimed, under its own prefix: whichever store ran first would otherwise also pay for
        // compiling the sort's code and warming the client and connections.
        var warmPlan = plan with { Records = Math.Min(plan.Records, WarmupRecords) };
        var warm = new PrefixedShuffleStore(store, "warmup/");
        var warmed = await new SortDemo(warm, new TaskFunctionRunner(warm, warmPlan), warmPlan, new PhaseLines(name + " warm-up", quiet: true)).RunAsync(cancellationToken).ConfigureAwait(false);
        if (!warmed.Verified)
        {
            throw new CliException($"{name}: the warm-up sort is wrong: {warmed.Problem ?? "the output's records differ from the input's"}");
        }

        var counted = new CountingShuffleStore(store);
        var before = await cpuSeconds().ConfigureAwait(false);
        var report = await new SortDemo(counted, new TaskFunctionRunner(counted, plan), plan, new PhaseLines(name)).RunAsync(cancellationToken).ConfigureAwait(false);
        var after = await cpuSeconds().ConfigureAwait(false);
        double? cpu = before is { } b && after is { } a ? a - b : null;
        return new StoreRun(name, where, report, counted.BytesWritten, counted.BytesRead, counted.Puts, counted.Gets, cpu, cpuScope);
    }

    private static void WriteTable(IReadOnlyList<StoreRun> runs, SortPlan plan)
    {
        AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
            $"sort of {Units.FormatBytes(plan.Bytes)} ({plan.Records:N0} records, seed {plan.Seed}), {plan.Mappers} mappers x {plan.Reducers} reducers as tasks in this process; stores run one after another")));
        var table = new Table().Border(TableBorder.Rounded).AddColumn("store");
        foreach (var column in new[] { "job s", "generate s", "map s", "reduce s", "verify s", "written", "read", "server CPU s" })
        {
            table.AddColumn(new TableColumn(column).RightAligned());
        }

        table.AddColumn("verified").AddColumn("where");
        var pocket = runs.FirstOrDefault(r => r.Store == "pocket");
        foreach (var run in runs)
        {
            table.AddRow(
                Markup.Escape(run.Store),
                Seconds(run.JobSeconds),
                Seconds(Phase(run, SortDemo.Generate)),
                Seconds(Phase(run, SortDemo.Map)),
                Seconds(Phase(run, SortDemo.Reduce)),
                Seconds(Phase(run, SortDemo.Verify)),
                Units.FormatBytes(run.BytesWritten),
                Units.FormatBytes(run.BytesRead),
                run.ServerCpuSeconds is { } cpu ? Seconds(cpu) : "-",
                run.Report.Verified ? "[green]yes[/]" : "[red]NO[/]",
                Markup.Escape($"{run.Where}; CPU: {run.CpuScope}"));
        }

        AnsiConsole.Write(table);
        if (pocket is not null)
        {
            foreach (var run in runs.Where(r => r != pocket && r.JobSeconds > 0))
            {
                AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                    $"job time pocket/{run.Store}: {pocket.JobSeconds / run.JobSeconds:0.00}x (below 1: Pocket faster)")));
            }
        }
    }

    private static JsonObject ToJson(IReadOnlyList<StoreRun> runs, SortSettings settings, SortPlan plan, DateTimeOffset started)
    {
        var stores = new JsonObject();
        foreach (var run in runs)
        {
            var phases = new JsonObject();
            foreach (var phase in run.Report.Phases)
            {
                phases[phase.Name] = new JsonObject
                {
                    ["seconds"] = Math.Round(phase.Seconds, 4),
                    ["functions"] = phase.Functions,
                    ["records"] = phase.Records,
                    ["bytes_read"] = phase.BytesRead,
                    ["bytes_written"] = phase.BytesWritten,
                };
            }

            stores[run.Store] = new JsonObject
            {
                ["verified"] = run.Report.Verified,
                ["problem"] = run.Report.Verified ? null : run.Report.Problem ?? "the output's records differ from the input's",
                ["job_seconds"] = Math.Round(run.JobSeconds, 4),
                ["total_seconds"] = Math.Round(run.Report.Seconds, 4),
                ["phases"] = phases,
                ["bytes_written"] = run.BytesWritten,
                ["bytes_read"] = run.BytesRead,
                ["bytes_moved"] = run.BytesWritten + run.BytesRead,
                ["puts"] = run.Puts,
                ["gets"] = run.Gets,
                ["server_cpu_s"] = run.ServerCpuSeconds is { } cpu ? Math.Round(cpu, 2) : null,
                ["server_cpu_scope"] = run.CpuScope,
                ["where"] = run.Where,
            };
        }

        var ratios = new JsonObject();
        if (runs.FirstOrDefault(r => r.Store == "pocket") is { } pocket)
        {
            foreach (var run in runs.Where(r => r != pocket && r.JobSeconds > 0))
            {
                ratios[run.Store] = new JsonObject { ["job_seconds"] = Math.Round(pocket.JobSeconds / run.JobSeconds, 3) };
            }
        }

        return new JsonObject
        {
            ["stores"] = stores,
            ["ratios"] = ratios,
            ["config"] = new JsonObject
            {
                ["size"] = plan.Bytes,
                ["records"] = plan.Records,
                ["mappers"] = plan.Mappers,
                ["reducers"] = plan.Reducers,
                ["seed"] = plan.Seed,
                ["functions_as"] = "tasks",
                ["stores_order"] = new JsonArray([.. runs.Select(r => (JsonNode)r.Store)]),
                ["job_seconds"] = "map + reduce; generate writes the input, verify reads the output back",
                ["warmup"] = $"an untimed sort of {Units.FormatBytes(Math.Min(plan.Records, WarmupRecords) * SortRecords.RecordSize)} through each store, under warmup/, before its measured one",
                ["ratio"] = "pocket/store job_seconds, below 1 = pocket faster",
                ["tier"] = settings.Stores.Contains("pocket") ? settings.Cluster.Tier.Name() : null,
                ["processors"] = Environment.ProcessorCount,
                ["runtime"] = RuntimeInformation.FrameworkDescription,
                ["os"] = RuntimeInformation.OSDescription,
                ["started_utc"] = started.UtcDateTime.ToString("O", CultureInfo.InvariantCulture),
            },
        };
    }

    private static double Phase(StoreRun run, string name) => run.Report.Phases.FirstOrDefault(p => p.Name == name)?.Seconds ?? 0;

    private static string Seconds(double seconds) => seconds.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>A grey line on stderr per finished phase.</summary>
    private sealed class PhaseLines(string store, bool quiet = false) : ISortObserver
    {
        public void PhaseStarted(string phase, int steps)
        {
        }

        public void StepDone(string phase)
        {
        }

        public void PhaseDone(PhaseReport report)
        {
            if (quiet)
            {
                return;
            }

            BenchCommand.Status(string.Create(CultureInfo.InvariantCulture,
                $"{store} {report.Name}: {report.Functions} x, {report.Seconds:0.00} s, read {Units.FormatBytes(report.BytesRead)}, wrote {Units.FormatBytes(report.BytesWritten)}"));
        }
    }
}
