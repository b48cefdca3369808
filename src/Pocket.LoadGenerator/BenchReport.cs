using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using HdrHistogram;
using Pocket.Controller.Contracts;
using Spectre.Console;

namespace Pocket.LoadGenerator;

/// <summary>Where Pocket ran: the cluster (description), the job and whether the user gave it, the own cluster's tier and node size.</summary>
internal sealed record BenchContext(string PocketWhere, string JobId, bool JobGiven, Pocket.Protocol.NodeTier? Tier, long? NodeCapacity, int SmallObjectThreshold, DateTimeOffset Started);

/// <summary>The bench's output: a table for people, or JSON (systems, Pocket's ratios to each peer, config) for scripts.</summary>
internal static class BenchReport
{
    public static void WriteTable(IReadOnlyList<BenchResult> results, BenchPlan plan, BenchContext context)
    {
        var pocketWhere = context.PocketWhere;
        AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
            $"size {Units.FormatSizeCompact(plan.Size)}, {plan.Clients} client(s), {(plan.Ops is { } n ? $"{n} ops" : Units.FormatDuration(plan.Duration ?? TimeSpan.Zero))} per system and op{(plan.Slices > 1 ? string.Create(CultureInfo.InvariantCulture, $" in {plan.Slices} slices taken in turn") : string.Empty)}, warm-up {Units.FormatDuration(plan.Warmup)}; pocket: {pocketWhere}")));
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("system")
            .AddColumn("op");
        foreach (var column in new[] { "ops", "p50 us", "p99 us", "p99.9 us", "ops/s", "MiB/s", "slowest client", "CPU us/op" })
        {
            table.AddColumn(new TableColumn(column).RightAligned());
        }

        table.AddColumn("CPU measured");
        foreach (var r in results)
        {
            table.AddRow(
                Markup.Escape(r.System),
                Name(r.Op),
                Format(r.Ops),
                Format(r.PercentileMicros(50)),
                Format(r.PercentileMicros(99)),
                Format(r.PercentileMicros(99.9)),
                Format(r.OpsPerSecond, r.OpsPerSecond >= 100 ? "0" : "0.##"),
                Format(r.MiBPerSecond, "0.0"),
                ClientSpread.Of(r.ClientOps) is { } spread ? Format(spread.SlowestOfMean, "0.00") + "x" : "-",
                r.CpuMicrosPerOp is { } cpu ? Format(cpu, "0.0") : "-",
                Markup.Escape(r.CpuScope ?? "not measured"));
        }

        AnsiConsole.Write(table);
        if (plan.Rate is { } rate)
        {
            WritePaced(results, rate);
        }

        var meta = MetaMapping(results).ToList();
        if (meta.Count > 0)
        {
            AnsiConsole.MarkupLine("metadata ops use 0-byte objects; what each system runs:");
            foreach (var (op, pocket, resp) in meta)
            {
                AnsiConsole.MarkupLine(Markup.Escape($"  {op.Name()}: pocket {pocket}; RESP peers {resp}"));
            }
        }

        var ratios = Ratios(results).ToList();
        if (ratios.Count == 0)
        {
            return;
        }

        var ratioTable = new Table().Border(TableBorder.Rounded)
            .AddColumn("op")
            .AddColumn("vs")
            .AddColumn(new TableColumn("p50 pocket/peer").RightAligned())
            .AddColumn(new TableColumn("p99 pocket/peer").RightAligned())
            .AddColumn(new TableColumn("throughput pocket/peer").RightAligned());
        foreach (var (op, peer, p50, p99, throughput) in ratios)
        {
            ratioTable.AddRow(Name(op), Markup.Escape(peer), Times(p50, lowerIsBetter: true), Times(p99, lowerIsBetter: true), Times(throughput, lowerIsBetter: false));
        }

        AnsiConsole.Write(ratioTable);
        AnsiConsole.MarkupLine("latency ratio below 1 and throughput ratio above 1 mean Pocket is faster (same process, same run, interleaved)");
    }

    /// <summary>An open-loop run's own table: what was offered and achieved, latency from the slot, send lag and service time.</summary>
    private static void WritePaced(IReadOnlyList<BenchResult> results, double rate)
    {
        AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
            $"open loop at {rate:0.##} ops/s offered: latency counts from each request's scheduled time; send lag is how late it was sent (pacer lag: of those whose client was ready before the slot, the load generator's own lateness), service from send to reply")));
        var table = new Table().Border(TableBorder.Rounded).AddColumn("system").AddColumn("op");
        foreach (var column in new[] { "offered ops/s", "achieved ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "send lag p50 us", "send lag p99 us", "pacer lag p99 us", "service p50 us", "service p99 us", "client CPU us/op" })
        {
            table.AddColumn(new TableColumn(column).RightAligned());
        }

        foreach (var r in results.Where(r => r.Paced is not null))
        {
            var paced = r.Paced!;
            table.AddRow(
                Markup.Escape(r.System),
                Name(r.Op),
                Format(paced.OfferedOpsPerSecond, "0"),
                r.BelowOffered ? $"[yellow]{Format(r.OpsPerSecond, "0")}[/]" : Format(r.OpsPerSecond, "0"),
                Format(r.PercentileMicros(50)),
                Format(r.PercentileMicros(90)),
                Format(r.PercentileMicros(99)),
                Format(r.PercentileMicros(99.9)),
                Format(Percentile(paced.SendLag, 50)),
                Format(Percentile(paced.SendLag, 99)),
                Format(Percentile(paced.PacerLag, 99)),
                Format(Percentile(paced.Service, 50)),
                Format(Percentile(paced.Service, 99)),
                Format(r.ProcessCpuMicrosPerOp, "0.0"));
        }

        AnsiConsole.Write(table);
        foreach (var r in results.Where(r => r.BelowOffered))
        {
            AnsiConsole.MarkupLine(Markup.Escape(BelowOfferedWarning(r)));
        }
    }

    /// <summary>Why an open-loop result's latencies mean "saturated", in one line.</summary>
    internal static string BelowOfferedWarning(BenchResult r) => string.Create(CultureInfo.InvariantCulture,
        $"warning: {r.System} {r.Op.Name()} achieved {r.OpsPerSecond:0} of {r.Paced!.OfferedOpsPerSecond:0} ops/s offered ({r.OpsPerSecond / r.Paced.OfferedOpsPerSecond:0.00}x, below {PacedFigures.KeptUp:0.00}x): the system or the load generator could not keep up, so its latencies are those of a saturated run");

    public static JsonObject ToJson(IReadOnlyList<BenchResult> results, BenchPlan plan, BenchContext context, IReadOnlyList<BenchPeer> peers)
    {
        var systems = new JsonObject();
        foreach (var r in results)
        {
            if (systems[r.System] is not JsonObject system)
            {
                system = [];
                systems[r.System] = system;
            }

            var figures = new JsonObject
            {
                ["ops"] = r.Ops,
                ["samples"] = r.Latency.TotalCount,
                ["seconds"] = Round(r.Elapsed.TotalSeconds, 4),
                ["p50_us"] = r.PercentileMicros(50),
                ["p90_us"] = r.PercentileMicros(90),
                ["p99_us"] = r.PercentileMicros(99),
                ["p999_us"] = r.PercentileMicros(99.9),
                ["max_us"] = r.Ops == 0 ? 0 : r.Latency.GetMaxValue(),
                ["mean_us"] = r.Ops == 0 ? 0 : Round(r.Latency.GetMean(), 1),
                ["ops_per_s"] = Round(r.OpsPerSecond, 2),
                ["mib_per_s"] = Round(r.MiBPerSecond, 2),
                ["server_cpu_us_per_op"] = r.CpuMicrosPerOp is { } cpu ? Round(cpu, 2) : null,
                ["server_cpu_scope"] = r.CpuScope,
                ["process_cpu_us_per_op"] = Round(r.ProcessCpuMicrosPerOp, 2),
                ["client_ops"] = ClientSpread.Of(r.ClientOps) is { } spread ? new JsonObject
                {
                    ["min"] = spread.Min,
                    ["p50"] = spread.Median,
                    ["max"] = spread.Max,
                    ["min_of_mean"] = Round(spread.SlowestOfMean, 3),
                } : null,
                ["latency_from"] = r.Paced is null ? "send" : "scheduled",
            };
            if (r.Paced is { } paced)
            {
                figures["offered_ops_per_s"] = Round(paced.OfferedOpsPerSecond, 2);
                figures["achieved_of_offered"] = Round(r.OpsPerSecond / paced.OfferedOpsPerSecond, 4);
                figures["below_offered"] = r.BelowOffered;
                figures["warning"] = r.BelowOffered ? BelowOfferedWarning(r) : null;
                figures["send_lag_p50_us"] = Percentile(paced.SendLag, 50);
                figures["send_lag_p99_us"] = Percentile(paced.SendLag, 99);
                figures["send_lag_max_us"] = paced.SendLag.TotalCount == 0 ? 0 : paced.SendLag.GetMaxValue();
                figures["pacer_lag_p50_us"] = Percentile(paced.PacerLag, 50);
                figures["pacer_lag_p99_us"] = Percentile(paced.PacerLag, 99);
                figures["pacer_lag_share"] = r.Ops == 0 ? 0 : Round((double)paced.PacerLag.TotalCount / r.Ops, 4);
                figures["service_p50_us"] = Percentile(paced.Service, 50);
                figures["service_p99_us"] = Percentile(paced.Service, 99);
            }

            system[Name(r.Op)] = figures;
        }

        var ratios = new JsonObject();
        foreach (var (op, peer, p50, p99, throughput) in Ratios(results))
        {
            if (ratios[peer] is not JsonObject byPeer)
            {
                byPeer = [];
                ratios[peer] = byPeer;
            }

            byPeer[Name(op)] = new JsonObject
            {
                ["p50"] = p50 is { } a ? Round(a, 3) : null,
                ["p99"] = p99 is { } b ? Round(b, 3) : null,
                ["ops_per_s"] = throughput is { } c ? Round(c, 3) : null,
            };
        }

        var peerUrls = new JsonObject();
        foreach (var peer in peers)
        {
            peerUrls[peer.Name] = peer.Url;
        }

        return new JsonObject
        {
            ["systems"] = systems,
            ["ratios"] = ratios,
            ["config"] = new JsonObject
            {
                ["size"] = plan.Size,
                ["size_text"] = Units.FormatSizeCompact(plan.Size),
                ["clients"] = plan.Clients,
                ["ops"] = plan.Ops,
                ["duration_s"] = plan.Duration is { } d ? d.TotalSeconds : null,
                ["warmup_s"] = plan.Warmup.TotalSeconds,
                ["slices"] = plan.Slices,
                ["rate"] = plan.Rate,
                ["ops_order"] = new JsonArray([.. results.Select(r => Name(r.Op)).Distinct().Select(n => (JsonNode)n)]),
                ["systems_order"] = new JsonArray([.. results.Select(r => r.System).Distinct().Select(n => (JsonNode)n)]),
                ["keys_per_round"] = plan.KeysPerRound,
                ["read_pool_keys"] = plan.PoolKeys,
                ["pocket"] = context.PocketWhere,
                ["job"] = context.JobId,
                ["job_given"] = context.JobGiven,
                ["tier"] = context.Tier is { } tier ? Protocol.NodeTierNames.Name(tier) : null,
                ["own_cluster_node_capacity"] = context.NodeCapacity,
                ["small_object_threshold"] = context.SmallObjectThreshold,
                ["peers"] = peerUrls,
                ["meta_ops"] = MetaJson(results),
                ["latency_ratio"] = "pocket/peer, below 1 = pocket faster",
                ["throughput_ratio"] = "pocket/peer, above 1 = pocket faster",
                ["processors"] = Environment.ProcessorCount,
                ["runtime"] = RuntimeInformation.FrameworkDescription,
                ["os"] = RuntimeInformation.OSDescription,
                ["started_utc"] = context.Started.UtcDateTime.ToString("O", CultureInfo.InvariantCulture),
            },
        };
    }

    private static IEnumerable<(BenchOp Op, string Peer, double? P50, double? P99, double? Throughput)> Ratios(IReadOnlyList<BenchResult> results)
    {
        foreach (var pocket in results.Where(r => r.System == "pocket"))
        {
            foreach (var peer in results.Where(r => r.System != "pocket" && r.Op == pocket.Op))
            {
                yield return (pocket.Op, peer.System,
                    Divide(pocket.PercentileMicros(50), peer.PercentileMicros(50)),
                    Divide(pocket.PercentileMicros(99), peer.PercentileMicros(99)),
                    Divide(pocket.OpsPerSecond, peer.OpsPerSecond));
            }
        }
    }

    private static IEnumerable<(BenchOp Op, string Pocket, string Resp)> MetaMapping(IReadOnlyList<BenchResult> results) =>
        BenchMetaMapping.Ops.Where(m => results.Any(r => r.Op == m.Op));

    /// <summary>What each metadata op is on Pocket and on a RESP peer; null when the run had none.</summary>
    private static JsonObject? MetaJson(IReadOnlyList<BenchResult> results)
    {
        var meta = MetaMapping(results).ToList();
        if (meta.Count == 0)
        {
            return null;
        }

        var json = new JsonObject { ["objects"] = "0 bytes; mib_per_s is 0 for these ops" };
        foreach (var (op, pocket, resp) in meta)
        {
            json[op.Name()] = new JsonObject { ["pocket"] = pocket, ["resp"] = resp };
        }

        return json;
    }

    private static long Percentile(LongHistogram histogram, double percentile) =>
        histogram.TotalCount == 0 ? 0 : histogram.GetValueAtPercentile(percentile);

    private static double? Divide(double a, double b) => b > 0 ? a / b : null;

    private static double Round(double value, int digits) => Math.Round(value, digits, MidpointRounding.AwayFromZero);

    private static string Name(BenchOp op) => op.Name();

    private static string Format(long value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private static string Format(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

    private static string Times(double? ratio, bool lowerIsBetter)
    {
        if (ratio is not { } r)
        {
            return "-";
        }

        var text = r.ToString("0.00", CultureInfo.InvariantCulture) + "x";
        var better = lowerIsBetter ? r < 1 : r > 1;
        return better ? $"[green]{text}[/]" : $"[yellow]{text}[/]";
    }
}
