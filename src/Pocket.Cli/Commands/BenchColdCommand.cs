using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.LoadGenerator;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench cold`: the first thing a serverless function does. Each run opens a fresh client (a new connection),
/// puts one object and reads it back, then closes: connect, first put and first get timed apart, Pocket beside each
/// `--vs` peer (a fresh RESP connection, SET and GET), runs interleaved.
/// </summary>
internal static class BenchColdCommand
{
    public static Command Create()
    {
        var json = CommandRunner.JsonOption();
        var runs = new Option<int>("--runs") { Description = "Fresh clients per system (1-10000)", DefaultValueFactory = _ => 50 };
        var size = CommandRunner.SizeOption("--size", 1 << 10, "Object size");
        var peers = new Option<string[]>("--vs") { Description = "A RESP peer run beside Pocket: NAME=resp://HOST:PORT (repeatable)", AllowMultipleArgumentsPerToken = false };
        var metadata = new Option<string?>("--metadata") { Description = "An existing cluster's metadata server (default: the `pocket up` cluster, else a cluster of its own)" };
        var warmup = CommandRunner.DurationOption("--warmup", "Untimed runs of every system for this long before the timed ones (default 2s; 0 for none)");
        var inline = BenchCommand.SmallObjectThresholdOption();
        var command = new Command("cold", "Time a fresh client's connect, first put and first get (a function's cold start)")
        {
            json, runs, size, peers, metadata, warmup, inline,
        };
        CommandRunner.SetAction(command, (parse, ct) =>
        {
            var count = parse.GetValue(runs);
            if (count is < 1 or > 10_000)
            {
                throw new CliException("--runs must be between 1 and 10000");
            }

            var bytes = parse.GetValue(size);
            if (bytes is < 1 or > 64L << 20)
            {
                throw new CliException("--size must be between 1 byte and 64MiB");
            }

            var targets = new List<BenchPeer>();
            foreach (var text in parse.GetValue(peers) ?? [])
            {
                targets.Add(BenchPeer.TryParse(text, out var peer, out var error) ? peer! : throw new CliException($"--vs: {error}"));
            }

            var warm = parse.GetValue(warmup) ?? DefaultWarmup;
            if (warm < TimeSpan.Zero || warm > TimeSpan.FromMinutes(10))
            {
                throw new CliException("--warmup must be between 0 and 10 minutes");
            }

            return RunAsync(count, (int)bytes, targets, parse.GetValue(metadata), warm, (int?)parse.GetValue(inline), parse.GetValue(json), ct);
        });
        return command;
    }

    /// <summary>
    /// How long untimed runs go before the timed ones. A cluster the bench has just started runs its servers' code as
    /// compiled ahead of time, and the runtime recompiles the hot methods in the background over the first seconds of
    /// use: without a warm-up, 100 timed runs on such a cluster took 1.5-2.3x the first put of a cluster that had served
    /// for a while, and the peers' figures of the same runs rose too, as the compiles took the cores (docs/benchmarks.md,
    /// "A function's first 64 KiB put: the bench's cluster, warm").
    /// </summary>
    private static readonly TimeSpan DefaultWarmup = TimeSpan.FromSeconds(2);

    private static async Task<int> RunAsync(int runs, int size, List<BenchPeer> peers, string? metadata, TimeSpan warmup, int? smallObjectThreshold, bool json, CancellationToken cancellationToken)
    {
        var value = new byte[size];
        Random.Shared.NextBytes(value);
        var session = await BenchSession.OpenAsync(metadata, null, new BenchClusterOptions(2, 256L << 20, 64 << 10, NodeTier.Dram, null, false), smallObjectThreshold, cancellationToken).ConfigureAwait(false);
        var samples = new Dictionary<string, List<(double Connect, double Put, double Get)>> { ["pocket"] = [] };
        foreach (var peer in peers)
        {
            samples[peer.Name] = [];
        }

        await using (session.ConfigureAwait(false))
        {
            await WarmUpAsync(session, peers, value, warmup, cancellationToken).ConfigureAwait(false);
            for (var run = 0; run < runs; run++)
            {
                // Interleaved, the order turning each run, so a slow phase of the machine hits every system alike.
                var order = new List<string> { "pocket" };
                order.AddRange(peers.Select(p => p.Name));
                var turn = run % order.Count;
                foreach (var name in order.Skip(turn).Concat(order.Take(turn)))
                {
                    var key = string.Create(CultureInfo.InvariantCulture, $"cold/{run}");
                    var sample = name == "pocket"
                        ? await PocketOnceAsync(session, key, value, cancellationToken).ConfigureAwait(false)
                        : await RespOnceAsync(peers.Single(p => p.Name == name), key, value, cancellationToken).ConfigureAwait(false);
                    samples[name].Add(sample);
                }
            }
        }

        Report(samples, runs, size, warmup, json);
        return 0;
    }

    /// <summary>
    /// Runs of every system, interleaved like the timed ones, for <paramref name="warmup"/>; their figures are dropped
    /// and their objects deleted at once, so a long warm-up takes no capacity from the timed runs.
    /// </summary>
    private static async Task WarmUpAsync(BenchSession session, List<BenchPeer> peers, byte[] value, TimeSpan warmup, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        for (var run = 0; clock.Elapsed < warmup; run++)
        {
            var key = string.Create(CultureInfo.InvariantCulture, $"cold-warmup/{run}");
            await PocketOnceAsync(session, key, value, cancellationToken).ConfigureAwait(false);
            foreach (var peer in peers)
            {
                await RespOnceAsync(peer, key, value, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static async Task<(double, double, double)> PocketOnceAsync(BenchSession session, string key, byte[] value, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var client = await session.ConnectAnother(cancellationToken).ConfigureAwait(false);
        await using (client.ConfigureAwait(false))
        {
            var connected = clock.Elapsed.TotalMicroseconds;
            var job = client.OpenJob(session.Job.Id, session.Job.Token);
            await job.PutAsync(session.Root + key, value, cancellationToken: cancellationToken).ConfigureAwait(false);
            var put = clock.Elapsed.TotalMicroseconds;
            var read = await job.GetAsync(session.Root + key, cancellationToken: cancellationToken).ConfigureAwait(false);
            var got = clock.Elapsed.TotalMicroseconds;
            if (read.Length != value.Length)
            {
                throw new CliException($"pocket: read {read.Length} bytes of {key}, put {value.Length}");
            }

            // Untimed, as the peers' DEL: the runs' objects never add up to more than the cluster holds (the bench's own
            // holds 512 MiB: 8,192 objects of 64 KiB).
            await job.DeleteAsync(session.Root + key, cancellationToken: cancellationToken).ConfigureAwait(false);
            return (connected, put - connected, got - put);
        }
    }

    /// <summary>
    /// A fresh connection to the peer, SET, then GET, on the load generator's RESP connection: the same connect and the
    /// same client loops as Pocket's client, so neither side's figure includes a wait for the thread pool the other does
    /// not have (the peer's replies, awaited on .NET's asynchronous sockets, completed through the pool and took 2-2.5x
    /// longer whenever its threads were asleep). No PING: the connect is the socket's alone, as Pocket's sends nothing.
    /// </summary>
    private static async Task<(double, double, double)> RespOnceAsync(BenchPeer peer, string key, byte[] value, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var connection = await RespConnection.ConnectAsync(peer.Host, peer.Port, cancellationToken, ping: false).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var connected = clock.Elapsed.TotalMicroseconds;
            var keyBytes = Encoding.UTF8.GetBytes("pocket-bench-" + key);
            await connection.SetAsync(keyBytes, value).ConfigureAwait(false);
            var put = clock.Elapsed.TotalMicroseconds;
            var read = new byte[value.Length];
            var length = await connection.GetAsync(keyBytes, read).ConfigureAwait(false);
            var got = clock.Elapsed.TotalMicroseconds;
            if (length != value.Length)
            {
                throw new CliException($"{peer.Name}: GET returned {length} bytes of the {value.Length} just SET");
            }

            await connection.CommandAsync("DEL", "pocket-bench-" + key).ConfigureAwait(false);
            return (connected, put - connected, got - put);
        }
    }

    private static double Percentile(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p / 100 * sorted.Count) - 1)];

    private static void Report(Dictionary<string, List<(double Connect, double Put, double Get)>> samples, int runs, int size, TimeSpan warmup, bool json)
    {
        var rows = samples.Select(s =>
        {
            List<double> Sorted(Func<(double Connect, double Put, double Get), double> pick) => [.. s.Value.Select(pick).Order()];
            return (System: s.Key, Connect: Sorted(x => x.Connect), Put: Sorted(x => x.Put), Get: Sorted(x => x.Get), Total: Sorted(x => x.Connect + x.Put + x.Get));
        }).ToList();
        if (json)
        {
            var systems = new JsonObject();
            foreach (var row in rows)
            {
                JsonObject Phase(List<double> sorted) => new() { ["p50_us"] = Math.Round(Percentile(sorted, 50), 1), ["p99_us"] = Math.Round(Percentile(sorted, 99), 1) };
                systems[row.System] = new JsonObject { ["connect"] = Phase(row.Connect), ["first_put"] = Phase(row.Put), ["first_get"] = Phase(row.Get), ["total"] = Phase(row.Total) };
            }

            CommandRunner.WriteJson(new JsonObject { ["runs"] = runs, ["size"] = size, ["warmup_s"] = warmup.TotalSeconds, ["systems"] = systems });
            return;
        }

        var table = new Table().AddColumns("system", "connect p50 / p99 (us)", "first put p50 / p99", "first get p50 / p99", "total p50 / p99");
        static string Cell(List<double> sorted) => string.Create(CultureInfo.InvariantCulture, $"{Percentile(sorted, 50):0} / {Percentile(sorted, 99):0}");
        foreach (var row in rows)
        {
            table.AddRow(Markup.Escape(row.System), Cell(row.Connect), Cell(row.Put), Cell(row.Get), Cell(row.Total));
        }

        AnsiConsole.MarkupLine(string.Create(CultureInfo.InvariantCulture, $"cold start: {runs} fresh clients per system, {Units.FormatBytes(size)} objects, runs interleaved, after {warmup.TotalSeconds:0.#} s of untimed runs"));
        AnsiConsole.Write(table);
    }
}
