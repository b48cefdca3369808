using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pocket.Cli.Demo;
using Pocket.Cli.Up;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.LoadGenerator.Sort;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket demo`: a serverless map/shuffle/reduce sort through Pocket, on an embedded cluster (or --controller), with
/// the job sized by the controller from its hints; and the hidden `pocket demo-function` that runs one function of it
/// as its own process.
/// </summary>
internal static class DemoCommand
{
    private const long MaxPartBytes = 1L << 30;

    /// <summary>The interpreter of `--functions-as python` when --python is not given.</summary>
    private const string PythonVariable = "POCKET_PYTHON";

    private static string PythonInterpreter(string? given) =>
        given is { Length: > 0 } ? given : Environment.GetEnvironmentVariable(PythonVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment : "python3";

    public static IEnumerable<Command> Create() => [Demo(), Function()];

    private sealed record DemoSettings(Uri? Controller, long Size, int Mappers, int Reducers, string FunctionsAs, string Python, bool Json, ulong Seed, bool Verbose, int Jobs = 1, int MetadataServers = 1);

    private static Command Demo()
    {
        var controller = new Option<string?>("--controller")
        {
            Description = "Run against this controller instead of an embedded cluster",
            HelpName = "URL",
        };
        var size = CommandRunner.SizeOption("--size", 256L << 20, "Bytes of records to sort (100-byte records, 10-byte keys)");
        var mappers = new Option<int>("--mappers") { Description = "Map functions (one input object each)", DefaultValueFactory = _ => 8, HelpName = "M" };
        var reducers = new Option<int>("--reducers") { Description = "Reduce functions (one output object each)", DefaultValueFactory = _ => 8, HelpName = "R" };
        var functionsAs = new Option<string>("--functions-as")
        {
            Description = "Run each function as a task in this process, as its own short-lived process (as Lambda would), or as a Python process using the Python client",
            DefaultValueFactory = _ => "tasks",
        };
        functionsAs.AcceptOnlyFromAmong("tasks", "processes", "python");
        var python = new Option<string?>("--python")
        {
            Description = $"Python interpreter for --functions-as python (default: ${PythonVariable}, else python3)",
            HelpName = "PATH",
        };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of the generated records (default: a random one, printed)" };
        var json = CommandRunner.JsonOption();
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log what the embedded servers do (to stderr)" };
        var jobs = new Option<int>("--jobs") { Description = "Sort jobs to register and run at once (each its own data; with --json a \"jobs\" array)", DefaultValueFactory = _ => 1, HelpName = "N" };
        var metadataServers = new Option<int>("--metadata")
        {
            Description = "Metadata servers of the embedded cluster; the controller places each job on the least loaded one",
            DefaultValueFactory = _ => 1,
            HelpName = "N",
        };
        jobs.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 16)
            {
                result.AddError("--jobs must be between 1 and 16");
            }
        });
        metadataServers.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 16)
            {
                result.AddError("--metadata must be between 1 and 16");
            }
        });
        foreach (var option in new[] { mappers, reducers })
        {
            option.Validators.Add(result =>
            {
                if (result.GetValueOrDefault<int>() is < 1 or > 1024)
                {
                    result.AddError($"{option.Name} must be between 1 and 1024");
                }
            });
        }

        var command = new Command("demo", "Sort generated records with serverless map and reduce functions through Pocket, and check the result")
        {
            controller, size, mappers, reducers, functionsAs, python, seed, json, verbose, jobs, metadataServers,
        };
        CommandRunner.SetAction(command, (parse, ct) =>
        {
            var settings = new DemoSettings(
                parse.GetValue(controller) is { } url ? ControllerConnection.ParseUrl(url, "--controller") : null,
                parse.GetValue(size),
                parse.GetValue(mappers),
                parse.GetValue(reducers),
                parse.GetValue(functionsAs) ?? "tasks",
                PythonInterpreter(parse.GetValue(python)),
                parse.GetValue(json),
                parse.GetValue(seed) ?? (ulong)Random.Shared.NextInt64(),
                parse.GetValue(verbose),
                parse.GetValue(jobs),
                parse.GetValue(metadataServers));
            if (settings.Controller is not null && settings.MetadataServers != 1)
            {
                throw new CliException("--metadata sizes the embedded cluster; a running cluster (--controller) has the metadata servers it was started with");
            }

            if (settings.Size < SortRecords.RecordSize)
            {
                throw new CliException($"--size must be at least one record ({SortRecords.RecordSize} bytes)");
            }

            if (settings.Size / Math.Min(settings.Mappers, settings.Reducers) > MaxPartBytes)
            {
                throw new CliException($"each function would hold more than {Units.FormatBytes(MaxPartBytes)}: use more --mappers/--reducers or a smaller --size");
            }

            return RunAsync(settings, ct);
        });
        return command;
    }

    private static async Task<int> RunAsync(DemoSettings settings, CancellationToken cancellationToken)
    {
        var plan = new SortPlan(settings.Size / SortRecords.RecordSize, settings.Mappers, settings.Reducers, settings.Seed);
        var say = settings.Json ? (Action<string>)(_ => { }) : text => AnsiConsole.MarkupLine(text);
        using var logging = new ClusterLogging(settings.Verbose);
        LocalCluster? cluster = null;
        try
        {
            Uri controllerUrl;
            JobToken clusterToken;
            if (settings.Controller is { } given)
            {
                controllerUrl = given;
                clusterToken = ClusterConnection.ResolveToken(PocketHome.Default());
            }
            else
            {
                var nodeCapacity = EmbeddedNodeCapacity(plan.Bytes);
                say($"starting an embedded cluster: {(settings.MetadataServers == 1 ? "metadata server" : $"{settings.MetadataServers} metadata servers")} and controller in this process; storage nodes ({Units.FormatBytes(nodeCapacity)} each) started by the controller as the job needs them");
                cluster = await LocalCluster.StartAsync(
                    new LocalClusterOptions { InitialNodes = 0, NodeCapacity = nodeCapacity, InProcess = true, PreTouchMemory = false, MetadataServers = settings.MetadataServers },
                    logging.Factory,
                    cancellationToken).ConfigureAwait(false);
                controllerUrl = cluster.ControllerUrl;
                clusterToken = cluster.Options.ClusterToken;
            }

            var report = await SortAsync(settings, plan, controllerUrl, clusterToken, embedded: cluster is not null, say, cancellationToken).ConfigureAwait(false);
            return report;
        }
        finally
        {
            if (cluster is not null)
            {
                logging.Stopping();
                await cluster.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Embedded nodes are sized so the job's hint (three times the data: input, shuffle, output) takes two of them at
    /// about 80 %: the controller starts two nodes, the minimum a job is spread over.
    /// </summary>
    private static long EmbeddedNodeCapacity(long bytes)
    {
        const long Unit = 64L << 20;
        var wanted = Math.Max(256L << 20, bytes * 3 * 5 / 8);
        return (wanted + Unit - 1) / Unit * Unit;
    }

    private static async Task<int> SortAsync(DemoSettings settings, SortPlan plan, Uri controllerUrl, JobToken clusterToken, bool embedded, Action<string> say, CancellationToken cancellationToken)
    {
        using var controller = new PocketControllerClient(controllerUrl, clusterToken);
        var hints = new JobHints { Functions = Math.Max(plan.Mappers, plan.Reducers), CapacityBytes = plan.Bytes * 3, LatencySensitive = false };
        var count = settings.Jobs == 1 ? "job" : string.Create(CultureInfo.InvariantCulture, $"{settings.Jobs} jobs");
        say(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"registering {count} 'sort' with {controllerUrl.ToString().TrimEnd('/')}: {hints.Functions} functions, {Units.FormatBytes(hints.CapacityBytes.Value)}, not latency-sensitive")));

        // Every job is registered before any sorts, so they run at once (and the controller places them side by side).
        var registrations = new List<RegisterJobResponse>();
        try
        {
            for (var i = 0; i < settings.Jobs; i++)
            {
                registrations.Add(await controller.RegisterJobAsync("sort", hints, cancellationToken).ConfigureAwait(false));
            }
        }
        catch (Exception ex) when (ex is PocketControllerException or OperationCanceledException)
        {
            foreach (var registered in registrations)
            {
                await DeregisterQuietlyAsync(controller, registered.JobId).ConfigureAwait(false);
            }

            if (ex is PocketControllerException { HttpStatus: null })
            {
                throw new CliException(ex.Message, ex);
            }

            throw;
        }

        foreach (var registration in registrations)
        {
            say(Markup.Escape($"job {registration.JobId} on metadata server {registration.Metadata}: tier {NodeTierNames.Name(registration.Tier)}, nodes {string.Join(", ", registration.Nodes.Select(n => string.Create(CultureInfo.InvariantCulture, $"{n.Id} ({n.Address}, weight {n.Weight:0.##})")))}"));
        }

        var reports = new SortReport?[registrations.Count];
        var ended = new DeleteJobResponse?[registrations.Count];
        try
        {
            await Task.WhenAll(registrations.Select(async (registration, i) =>
                reports[i] = await SortJobAsync(settings, plan, registration, say, cancellationToken).ConfigureAwait(false))).ConfigureAwait(false);
        }
        finally
        {
            // Even a failed sort frees its data at once rather than when its lease runs out.
            for (var i = 0; i < registrations.Count; i++)
            {
                try
                {
                    ended[i] = await controller.DeregisterAsync(registrations[i].JobId, CancellationToken.None).ConfigureAwait(false);
                }
                catch (PocketControllerException ex) when (reports.All(r => r is not null))
                {
                    CommandRunner.Fail($"could not deregister {registrations[i].JobId}: {ex.Message}");
                }
            }
        }

        var done = reports.Select(r => r!).ToList();
        if (settings.Json)
        {
            CommandRunner.WriteJson(done.Count == 1
                ? ToJson(done[0], settings, registrations[0], controllerUrl, embedded, ended[0])
                : new JsonObject
                {
                    ["verified"] = done.TrueForAll(r => r.Verified),
                    ["controller"] = controllerUrl.ToString().TrimEnd('/'),
                    ["embedded"] = embedded,
                    ["jobs"] = new JsonArray([.. done.Select((r, i) => (JsonNode)ToJson(r, settings, registrations[i], controllerUrl, embedded, ended[i]))]),
                });
        }
        else
        {
            for (var i = 0; i < done.Count; i++)
            {
                PrintSummary(done[i], settings, registrations[i], embedded, ended[i]);
            }
        }

        var wrong = done.Select((r, i) => (Report: r, Job: registrations[i].JobId)).Where(x => !x.Report.Verified).ToList();
        foreach (var (report, job) in wrong)
        {
            CommandRunner.Fail(done.Count == 1 ? $"the sort is wrong: {Problem(report)}" : $"the sort of job {job} is wrong: {Problem(report)}");
        }

        return wrong.Count == 0 ? 0 : 1;
    }

    /// <summary>One job's sort, through the metadata server its registration names.</summary>
    private static async Task<SortReport> SortJobAsync(DemoSettings settings, SortPlan plan, RegisterJobResponse registration, Action<string> say, CancellationToken cancellationToken)
    {
        var client = await PocketClient.ConnectAsync(registration.Metadata, cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            var store = new PocketShuffleStore(client.OpenJob(registration));
            IFunctionRunner runner = settings.FunctionsAs switch
            {
                "processes" => ProcessFunctionRunner.Dotnet(registration.Metadata, registration.JobId, registration.Token, plan),
                "python" => ProcessFunctionRunner.Python(settings.Python, registration.Metadata, registration.JobId, registration.Token, plan),
                _ => new TaskFunctionRunner(store, plan),
            };

            say(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"sorting {Units.FormatBytes(plan.Bytes)} ({plan.Records:N0} records) with {plan.Mappers} mappers and {plan.Reducers} reducers as {runner.Kind}{(settings.Jobs == 1 ? "" : $" for job {registration.JobId}")}")));

            // Several jobs at once would draw over each other's bars: they report when done.
            return settings.Jobs == 1
                ? await RunWithProgressAsync(observer => new SortDemo(store, runner, plan, observer), settings, cancellationToken).ConfigureAwait(false)
                : await new SortDemo(store, runner, plan, new SilentObserver()).RunAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task DeregisterQuietlyAsync(PocketControllerClient controller, string jobId)
    {
        try
        {
            await controller.DeregisterAsync(jobId, CancellationToken.None).ConfigureAwait(false);
        }
        catch (PocketControllerException ex)
        {
            CommandRunner.Fail($"could not deregister {jobId}: {ex.Message}");
        }
    }

    /// <summary>A bar per phase on a terminal, a line per phase otherwise, nothing but the result with --json.</summary>
    private static async Task<SortReport> RunWithProgressAsync(Func<ISortObserver, SortDemo> demo, DemoSettings settings, CancellationToken cancellationToken)
    {
        if (settings.Json)
        {
            return await demo(new SilentObserver()).RunAsync(cancellationToken).ConfigureAwait(false);
        }

        if (!CommandRunner.StdoutIsInteractive)
        {
            return await demo(new LineObserver()).RunAsync(cancellationToken).ConfigureAwait(false);
        }

        SortReport? report = null;
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async context =>
            {
                report = await demo(new ProgressObserver(context)).RunAsync(cancellationToken).ConfigureAwait(false);
            }).ConfigureAwait(false);
        return report!;
    }

    private static string Problem(SortReport report) =>
        report.Problem
        ?? (report.Input != report.Output ? $"the output's records differ from the input's (input {report.Input}; output {report.Output})" : "unknown");

    private static void PrintSummary(SortReport report, DemoSettings settings, RegisterJobResponse registration, bool embedded, DeleteJobResponse? ended)
    {
        var plan = report.Plan;
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("phase")
            .AddColumn(new TableColumn("functions").RightAligned())
            .AddColumn(new TableColumn("time").RightAligned())
            .AddColumn(new TableColumn("read").RightAligned())
            .AddColumn(new TableColumn("written").RightAligned())
            .AddColumn(new TableColumn("MiB/s").RightAligned());
        foreach (var phase in report.Phases)
        {
            table.AddRow(
                phase.Name,
                phase.Functions.ToString(CultureInfo.InvariantCulture),
                Seconds(phase.Seconds),
                Units.FormatBytes(phase.BytesRead),
                Units.FormatBytes(phase.BytesWritten),
                Rate(phase.BytesRead + phase.BytesWritten, phase.Seconds));
        }

        table.AddRow(
            "[bold]total[/]",
            string.Empty,
            $"[bold]{Seconds(report.Seconds)}[/]",
            Units.FormatBytes(report.Phases.Sum(p => p.BytesRead)),
            Units.FormatBytes(report.Phases.Sum(p => p.BytesWritten)),
            Rate(report.BytesMoved, report.Seconds));
        AnsiConsole.Write(table);

        var nodes = string.Join(", ", registration.Nodes.Select(n => string.Create(CultureInfo.InvariantCulture, $"{n.Id} at {n.Address} (weight {n.Weight:0.##})")));
        var where = embedded ? "embedded cluster; the controller started these nodes for the job" : "your cluster";
        AnsiConsole.MarkupLine(Markup.Escape($"job {registration.JobId}: tier {NodeTierNames.Name(registration.Tier)}, {registration.Nodes.Count} node{(registration.Nodes.Count == 1 ? "" : "s")}: {nodes} ({where})"));
        AnsiConsole.MarkupLine(Markup.Escape(string.Create(
            CultureInfo.InvariantCulture,
            $"{plan.Records:N0} records of {SortRecords.RecordSize} bytes ({Units.FormatBytes(plan.Bytes)}), {plan.Mappers} mappers x {plan.Reducers} reducers as {settings.FunctionsAs}, seed {settings.Seed}; {Units.FormatBytes(report.BytesMoved)} moved through Pocket")));
        if (ended is not null)
        {
            AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"deregistered {ended.JobId}: freed {ended.ObjectsFreed} objects, {Units.FormatBytes(ended.BytesFreed)}")));
        }

        AnsiConsole.MarkupLine(report.Verified
            ? $"[green]verified[/]: the output is sorted and holds exactly the input's records ({Markup.Escape(report.Output.ToString())})"
            : $"[red]NOT verified[/]: {Markup.Escape(Problem(report))}");
    }

    private static JsonObject ToJson(SortReport report, DemoSettings settings, RegisterJobResponse registration, Uri controller, bool embedded, DeleteJobResponse? ended)
    {
        static JsonObject Checksum(RecordChecksum c) => new()
        {
            ["records"] = c.Count,
            ["sum"] = c.Sum.ToString("x16", CultureInfo.InvariantCulture),
            ["xor"] = c.Xor.ToString("x16", CultureInfo.InvariantCulture),
        };

        return new JsonObject
        {
            ["verified"] = report.Verified,
            ["problem"] = report.Verified ? null : Problem(report),
            ["size"] = report.Plan.Bytes,
            ["records"] = report.Plan.Records,
            ["mappers"] = report.Plan.Mappers,
            ["reducers"] = report.Plan.Reducers,
            ["functionsAs"] = settings.FunctionsAs,
            ["seed"] = settings.Seed,
            ["controller"] = controller.ToString().TrimEnd('/'),
            ["embedded"] = embedded,
            ["job"] = registration.JobId,
            ["metadata"] = registration.Metadata,
            ["tier"] = NodeTierNames.Name(registration.Tier),
            ["nodes"] = new JsonArray([.. registration.Nodes.Select(n => (JsonNode)new JsonObject { ["id"] = n.Id, ["address"] = n.Address, ["weight"] = n.Weight })]),
            ["phases"] = new JsonArray([.. report.Phases.Select(p => (JsonNode)new JsonObject
            {
                ["name"] = p.Name,
                ["functions"] = p.Functions,
                ["seconds"] = p.Seconds,
                ["records"] = p.Records,
                ["bytesRead"] = p.BytesRead,
                ["bytesWritten"] = p.BytesWritten,
            })]),
            ["seconds"] = report.Seconds,
            ["bytesMoved"] = report.BytesMoved,
            ["checksum"] = new JsonObject { ["input"] = Checksum(report.Input), ["output"] = Checksum(report.Output) },
            ["deregistered"] = ended is null ? null : new JsonObject { ["objectsFreed"] = ended.ObjectsFreed, ["bytesFreed"] = ended.BytesFreed },
        };
    }

    private static string Seconds(double seconds) => seconds.ToString("0.00", CultureInfo.InvariantCulture) + " s";

    private static string Rate(long bytes, double seconds) =>
        seconds <= 0 ? "-" : (bytes / seconds / (1 << 20)).ToString("0", CultureInfo.InvariantCulture);

    /// <summary>`pocket demo-function map|reduce ...`: one function of the sort, run by `--functions-as processes`.</summary>
    private static Command Function()
    {
        var kind = new Argument<string>("FUNCTION") { Description = "map or reduce" };
        kind.AcceptOnlyFromAmong("map", "reduce");
        var metadata = new Option<string>("--metadata") { Description = "Metadata server HOST:PORT", Required = true, HelpName = "HOST:PORT" };
        var job = new Option<string>("--job") { Description = "Job id", Required = true };
        var token = new Option<string?>("--token") { Description = $"Job token (default: ${ProcessFunctionRunner.TokenVariable})" };
        var index = new Option<int>("--index") { Description = "Which mapper or reducer", Required = true };
        var mappers = new Option<int>("--mappers") { Description = "Mappers of the sort", Required = true };
        var reducers = new Option<int>("--reducers") { Description = "Reducers of the sort", Required = true };
        var command = new Command("demo-function", "One map or reduce function of `pocket demo` (run by --functions-as processes)")
        {
            kind, metadata, job, token, index, mappers, reducers,
        };
        command.Hidden = true;
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var tokenText = parse.GetValue(token) ?? Environment.GetEnvironmentVariable(ProcessFunctionRunner.TokenVariable);
            if (!JobToken.TryParse(tokenText?.Trim(), out var jobToken))
            {
                throw new CliException($"give the job token with --token or ${ProcessFunctionRunner.TokenVariable} (32 hex digits)");
            }

            var client = await PocketClient.ConnectAsync(parse.GetRequiredValue(metadata), cancellationToken: ct).ConfigureAwait(false);
            await using (client.ConfigureAwait(false))
            {
                var store = new PocketShuffleStore(client.OpenJob(parse.GetRequiredValue(job), jobToken));
                var result = parse.GetRequiredValue(kind) == "map"
                    ? await SortFunctions.MapAsync(store, parse.GetValue(index), parse.GetValue(reducers), ct).ConfigureAwait(false)
                    : await SortFunctions.ReduceAsync(store, parse.GetValue(index), parse.GetValue(mappers), ct).ConfigureAwait(false);
                Console.Out.WriteLine(JsonSerializer.Serialize(result, DemoJsonContext.Default.FunctionResult));
            }

            return 0;
        });
        return command;
    }

    private sealed class SilentObserver : ISortObserver
    {
        public void PhaseStarted(string phase, int steps)
        {
        }

        public void StepDone(string phase)
        {
        }

        public void PhaseDone(PhaseReport report)
        {
        }
    }

    /// <summary>Output that is not a terminal gets one line per finished phase.</summary>
    private sealed class LineObserver : ISortObserver
    {
        public void PhaseStarted(string phase, int steps)
        {
        }

        public void StepDone(string phase)
        {
        }

        public void PhaseDone(PhaseReport report) =>
            Console.Out.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{report.Name}: {report.Functions} function{(report.Functions == 1 ? "" : "s")}, {Seconds(report.Seconds)}, read {Units.FormatBytes(report.BytesRead)}, wrote {Units.FormatBytes(report.BytesWritten)}"));
    }

    /// <summary>A bar per phase, advanced as its functions finish.</summary>
    private sealed class ProgressObserver(ProgressContext context) : ISortObserver
    {
        private readonly Dictionary<string, ProgressTask> _tasks = [];
        private readonly Lock _lock = new();

        public void PhaseStarted(string phase, int steps)
        {
            lock (_lock)
            {
                _tasks[phase] = context.AddTask(phase, maxValue: steps);
            }
        }

        public void StepDone(string phase)
        {
            lock (_lock)
            {
                _tasks[phase].Increment(1);
            }
        }

        public void PhaseDone(PhaseReport report)
        {
            lock (_lock)
            {
                var task = _tasks[report.Name];
                task.Description = string.Create(CultureInfo.InvariantCulture, $"{report.Name} ({report.Functions} x, {Units.FormatBytes(report.BytesRead + report.BytesWritten)})");
                task.Value = task.MaxValue;
                task.StopTask();
            }
        }
    }
}
