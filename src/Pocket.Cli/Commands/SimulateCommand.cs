using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Pocket.Controller;
using Pocket.Controller.Scaling;
using Pocket.Controller.Simulation;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket simulate`: runs the autoscaler's policy on a job trace with a simulated clock and prints node-seconds
/// provisioned against the minimum needed and the seconds any job was short of throughput.
/// </summary>
internal static class SimulateCommand
{
    public static Command Create()
    {
        var trace = new Option<string?>("--trace") { Description = $"Job trace: a JSON file, or a shipped trace by name ({string.Join(", ", SimulationTrace.ShippedNames)}; default {SimulationTrace.ShippedName})", HelpName = "FILE|NAME" };
        var writeTrace = new Option<string?>("--write-trace") { Description = "Write the shipped trace to FILE ('-': stdout) as a template, and exit", HelpName = "FILE" };
        var json = CommandRunner.JsonOption();
        var band = new Option<string?>("--band") { Description = "Utilisation band in percent, lower-upper (trace's, else 80-95)", HelpName = "LOW-HIGH" };
        var minNodes = new Option<int?>("--min-nodes") { Description = "Never fewer live nodes (trace's, else 2)", HelpName = "N" };
        var maxNodes = new Option<int?>("--max-nodes") { Description = "Never more live nodes (trace's, else 16)", HelpName = "N" };
        var startDelay = CommandRunner.DurationOption("--start-delay", "From the decision to add a node until it serves (trace's, else 5s)");
        var drainTime = CommandRunner.DurationOption("--drain-time", "From the decision to remove a node until it stops (trace's, else 5s)");
        var warmPool = new Option<int?>("--warm-pool") { Description = $"Idle standby nodes kept per tier, as `pocket up --warm-pool`: a scale-up takes one (0-{SimulationTrace.MaxWarmPool}; trace's, else 0)", HelpName = "N" };
        var warmDelay = CommandRunner.DurationOption("--warm-delay", "From the decision to add a node until a warm-pool node serves (trace's, else 0s: the next second)");
        var cooldown = CommandRunner.DurationOption("--cooldown", "Quiet time after an action, and how long a tier must stay below the band to shrink (trace's, else 5s)");
        var duration = CommandRunner.DurationOption("--duration", "Seconds to simulate (default: until the jobs end and the cluster settles)");
        var step = CommandRunner.DurationOption("--step", "Rows of the timeline table (default 10s)");
        var metadataMax = new Option<int?>("--metadata-max") { Description = "Most metadata servers: the metadata plane scales on its band as `pocket up --metadata-max` (default 1: one server throughout)", HelpName = "N" };
        var metadataObject = CommandRunner.OptionalSizeOption("--metadata-object-size", "Object size the metadata model assumes jobs move their data in, 2 metadata requests per object (default 1MiB; small objects: far more requests per byte)");
        var noHints = new Option<bool>("--no-hints") { Description = "Jobs register without hints: the policy sees only the samples, not the peaks jobs declare" };
        var command = new Command("simulate", "Run the autoscaling policy on a job trace with a simulated clock: node-seconds vs the minimum, seconds short of throughput")
        {
            trace, writeTrace, json, band, minNodes, maxNodes, startDelay, drainTime, warmPool, warmDelay, cooldown, duration, step, noHints, metadataMax, metadataObject,
        };
        CommandRunner.SetAction(command, (parse, ct) =>
        {
            if (parse.GetValue(writeTrace) is { } target)
            {
                WriteTemplate(target);
                return Task.FromResult(0);
            }

            var loaded = Load(parse.GetValue(trace));
            var policy = loaded.Policy;
            if (parse.GetValue(band) is { } text)
            {
                var (lower, upper) = ParseBand(text);
                policy = policy with { Lower = lower, Upper = upper };
            }

            policy = policy with
            {
                MinNodes = parse.GetValue(minNodes) ?? policy.MinNodes,
                MaxNodes = parse.GetValue(maxNodes) ?? policy.MaxNodes,
                Cooldown = parse.GetValue(cooldown) ?? policy.Cooldown,
            };
            try
            {
                policy.Validate();
            }
            catch (ArgumentException ex)
            {
                throw new CliException(ex.Message);
            }

            if (loaded.InitialNodes.Values.Sum() > policy.MaxNodes)
            {
                throw new CliException($"the trace starts with {loaded.InitialNodes.Values.Sum()} nodes, more than --max-nodes {policy.MaxNodes}");
            }

            var seconds = loaded.Duration;
            if (parse.GetValue(duration) is { } d)
            {
                if (d.TotalSeconds is < 1 or > 7 * 24 * 3600)
                {
                    throw new CliException("--duration must be between 1s and 7 days");
                }

                seconds = (int)Math.Ceiling(d.TotalSeconds);
            }

            var pool = parse.GetValue(warmPool) ?? loaded.WarmPool;
            if (pool is < 0 or > SimulationTrace.MaxWarmPool)
            {
                throw new CliException($"--warm-pool must be between 0 and {SimulationTrace.MaxWarmPool}");
            }

            var run = loaded with
            {
                Policy = policy,
                StartDelay = parse.GetValue(startDelay) ?? loaded.StartDelay,
                DrainTime = parse.GetValue(drainTime) ?? loaded.DrainTime,
                WarmPool = pool,
                WarmDelay = parse.GetValue(warmDelay) ?? loaded.WarmDelay,
                Duration = seconds,
                Metadata = loaded.Metadata with
                {
                    MaxServers = parse.GetValue(metadataMax) is { } most ? (most is >= 1 and <= 16 ? most : throw new CliException("--metadata-max must be between 1 and 16")) : loaded.Metadata.MaxServers,
                    ObjectBytes = parse.GetValue(metadataObject) ?? loaded.Metadata.ObjectBytes,
                },
                Jobs = parse.GetValue(noHints) ? [.. loaded.Jobs.Select(j => j with { Declared = false })] : loaded.Jobs,
            };
            var result = ClusterSimulator.Run(run);
            if (parse.GetValue(json))
            {
                CommandRunner.WriteJson(ToJson(result));
            }
            else
            {
                var rowSeconds = (int)Math.Max(1, Math.Round((parse.GetValue(step) ?? TimeSpan.FromSeconds(10)).TotalSeconds));
                Render(result, rowSeconds);
            }

            return Task.FromResult(0);
        });
        return command;
    }

    private static SimulationTrace Load(string? path)
    {
        if (path is null)
        {
            return SimulationTrace.Shipped();
        }

        if (!File.Exists(path) && SimulationTrace.ShippedNames.Contains(path, StringComparer.Ordinal))
        {
            return SimulationTrace.Shipped(path);
        }

        if (!File.Exists(path))
        {
            throw new CliException($"trace file '{path}' not found (shipped traces: {string.Join(", ", SimulationTrace.ShippedNames)})");
        }

        try
        {
            return SimulationTrace.Parse(File.ReadAllText(path));
        }
        catch (SimulationTraceException ex)
        {
            throw new CliException($"{path}: {ex.Message}");
        }
    }

    private static void WriteTemplate(string target)
    {
        var text = SimulationTrace.ShippedJson();
        if (target == "-")
        {
            Console.Out.Write(text);
            return;
        }

        File.WriteAllText(target, text);
        CommandRunner.Error.MarkupLine($"wrote the {SimulationTrace.ShippedName} trace to [bold]{Markup.Escape(target)}[/]; run it with `pocket simulate --trace {Markup.Escape(target)}`");
    }

    /// <summary>"60-80" (percent) into (0.6, 0.8).</summary>
    internal static (double Lower, double Upper) ParseBand(string text)
    {
        var parts = text.Replace("%", "", StringComparison.Ordinal).Split('-', StringSplitOptions.TrimEntries);
        if (parts.Length == 2
            && double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var lower)
            && double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var upper)
            && lower > 0 && lower < upper && upper <= 100)
        {
            return (lower / 100, upper / 100);
        }

        throw new CliException($"--band '{text}' is not LOW-HIGH in percent with 0 < LOW < HIGH <= 100 (example: 60-80)");
    }

    private static JsonObject ToJson(SimulationResult result)
    {
        var trace = result.Trace;
        var events = new JsonArray();
        foreach (var e in result.Events)
        {
            events.Add(new JsonObject { ["second"] = e.Second, ["kind"] = e.Kind, ["node"] = e.NodeId, ["reason"] = e.Reason });
        }

        var timeline = new JsonArray();
        foreach (var s in result.Timeline)
        {
            timeline.Add(new JsonObject
            {
                ["second"] = s.Second,
                ["demand_bps"] = Math.Round(s.DemandBitsPerSecond),
                ["served_bps"] = Math.Round(s.ServedBitsPerSecond),
                ["supply_bps"] = Math.Round(s.SupplyBitsPerSecond),
                ["bytes"] = Math.Round(s.DemandBytes),
                ["provisioned"] = s.Provisioned,
                ["serving"] = s.Serving,
                ["starting"] = s.Starting,
                ["draining"] = s.Draining,
                ["standby"] = s.Standby,
                ["oracle"] = s.Oracle,
                ["short"] = s.Short,
            });
        }

        return new JsonObject
        {
            ["trace"] = trace.Name,
            ["seconds"] = result.Seconds,
            ["node_seconds"] = result.NodeSeconds,
            ["oracle_node_seconds"] = result.OracleNodeSeconds,
            ["ratio"] = Math.Round(result.Ratio, 4),
            ["short_seconds"] = result.ShortSeconds,
            ["longest_short_streak"] = result.LongestShortStreak,
            ["capacity_short_seconds"] = result.CapacityShortSeconds,
            ["scale_ups"] = result.ScaleUps,
            ["scale_downs"] = result.ScaleDowns,
            ["metadata_server_seconds"] = result.Metadata?.ServerSeconds,
            ["metadata_peak_servers"] = result.Metadata?.PeakServers,
            ["metadata_peak_requests_per_second"] = result.Metadata is { } plane ? Math.Round(plane.PeakRequestsPerSecond, 1) : null,
            ["metadata_overloaded_seconds"] = result.Metadata?.OverloadedSeconds,
            ["settings"] = new JsonObject
            {
                ["lower"] = trace.Policy.Lower,
                ["upper"] = trace.Policy.Upper,
                ["min_nodes"] = trace.Policy.MinNodes,
                ["max_nodes"] = trace.Policy.MaxNodes,
                ["cooldown_seconds"] = trace.Policy.Cooldown.TotalSeconds,
                ["start_delay_seconds"] = trace.StartDelay.TotalSeconds,
                ["drain_time_seconds"] = trace.DrainTime.TotalSeconds,
                ["warm_pool"] = trace.WarmPool,
                ["warm_delay_seconds"] = trace.WarmDelay.TotalSeconds,
                ["jobs_declaring_hints"] = trace.Jobs.Count(j => j.Declared),
            },
            ["events"] = events,
            ["timeline"] = timeline,
        };
    }

    private static void Render(SimulationResult result, int rowSeconds)
    {
        var trace = result.Trace;
        var policy = trace.Policy;
        AnsiConsole.MarkupLine(string.Create(CultureInfo.InvariantCulture,
            $"[bold]{Markup.Escape(trace.Name)}[/]: {trace.Jobs.Count} jobs, band {policy.Lower * 100:0.#}-{policy.Upper * 100:0.#} %, nodes {policy.MinNodes}-{policy.MaxNodes}, cooldown {policy.Cooldown.TotalSeconds:0.#} s, start delay {trace.StartDelay.TotalSeconds:0.#} s, drain {trace.DrainTime.TotalSeconds:0.#} s{(trace.WarmPool > 0 ? $", warm pool {trace.WarmPool} per tier (serving after {trace.WarmDelay.TotalSeconds:0.#} s)" : "")}"));

        var timeline = new Table().Border(TableBorder.Rounded).Title($"timeline ({rowSeconds} s a row; nodes at the row's last second)")
            .AddColumn(new TableColumn("t (s)").RightAligned())
            .AddColumn(new TableColumn("demand").RightAligned())
            .AddColumn(new TableColumn("served").RightAligned())
            .AddColumn(new TableColumn("nodes").RightAligned())
            .AddColumn(new TableColumn("oracle").RightAligned())
            .AddColumn(new TableColumn("short s").RightAligned())
            .AddColumn("nodes: [green]█[/] serving [yellow]▒[/] starting [grey]░[/] draining [red]·[/] missing vs oracle");
        for (var start = 0; start < result.Timeline.Count; start += rowSeconds)
        {
            var rows = result.Timeline.Skip(start).Take(rowSeconds).ToList();
            var last = rows[^1];
            var shortCount = rows.Count(r => r.Short);
            timeline.AddRow(
                start.ToString(CultureInfo.InvariantCulture),
                Gbps(rows.Average(r => r.DemandBitsPerSecond)),
                Gbps(rows.Average(r => r.ServedBitsPerSecond)),
                last.Provisioned.ToString(CultureInfo.InvariantCulture),
                rows.Max(r => r.Oracle).ToString(CultureInfo.InvariantCulture),
                shortCount == 0 ? "" : $"[red]{shortCount}[/]",
                Bar(last.Serving, last.Starting, last.Draining, rows.Max(r => r.Oracle)));
        }

        AnsiConsole.Write(timeline);

        var events = new Table().Border(TableBorder.Rounded).Title("events")
            .AddColumn(new TableColumn("t (s)").RightAligned())
            .AddColumn("event")
            .AddColumn(new TableColumn("node").RightAligned())
            .AddColumn("reason");
        foreach (var e in result.Events)
        {
            var kind = e.Kind switch
            {
                "scale-up" => "[yellow]scale-up[/]",
                "scale-down" => "[blue]scale-down[/]",
                _ => e.Kind,
            };
            events.AddRow(e.Second.ToString(CultureInfo.InvariantCulture), kind, e.NodeId?.ToString(CultureInfo.InvariantCulture) ?? "", Markup.Escape(e.Reason));
        }

        AnsiConsole.Write(events);

        var summary = new Table().Border(TableBorder.Rounded).Title("summary")
            .AddColumn("measure")
            .AddColumn(new TableColumn("value").RightAligned());
        summary.AddRow("simulated seconds", result.Seconds.ToString(CultureInfo.InvariantCulture));
        summary.AddRow("node-seconds provisioned", result.NodeSeconds.ToString("0", CultureInfo.InvariantCulture));
        summary.AddRow("node-seconds needed (oracle)", result.OracleNodeSeconds.ToString("0", CultureInfo.InvariantCulture));
        summary.AddRow("ratio", result.Ratio.ToString("0.00", CultureInfo.InvariantCulture));
        summary.AddRow("seconds a job was short of throughput", result.ShortSeconds.ToString(CultureInfo.InvariantCulture));
        summary.AddRow("longest short streak (s)", result.LongestShortStreak.ToString(CultureInfo.InvariantCulture));
        summary.AddRow("seconds short of capacity", result.CapacityShortSeconds.ToString(CultureInfo.InvariantCulture));
        summary.AddRow("scale-ups / scale-downs", $"{result.ScaleUps} / {result.ScaleDowns}");
        if (result.Metadata is { } metadata)
        {
            summary.AddRow("metadata server-seconds (peak servers)", string.Create(CultureInfo.InvariantCulture, $"{metadata.ServerSeconds:0} ({metadata.PeakServers})"));
            summary.AddRow("metadata requests/s at peak (model)", metadata.PeakRequestsPerSecond.ToString("0", CultureInfo.InvariantCulture));
            summary.AddRow("seconds a metadata server was over one core", metadata.OverloadedSeconds.ToString(CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(summary);
    }

    private static string Gbps(double bitsPerSecond) => (bitsPerSecond / 1e9).ToString("0.0", CultureInfo.InvariantCulture) + " Gb/s";

    private static string Bar(int serving, int starting, int draining, int oracle)
    {
        var provisioned = serving + starting + draining;
        var bar = new StringBuilder();
        void Run(string colour, char c, int count)
        {
            if (count > 0)
            {
                bar.Append('[').Append(colour).Append(']').Append(c, count).Append("[/]");
            }
        }

        Run("green", '█', serving);
        Run("yellow", '▒', starting);
        Run("grey", '░', draining);
        Run("red", '·', Math.Max(0, oracle - provisioned));
        return bar.ToString();
    }
}
