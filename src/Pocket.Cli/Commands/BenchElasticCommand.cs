using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Cli.Up;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Scaling;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench elastic`: how fast the cluster changes size. Starts a cluster with the controller (storage nodes
/// as child processes, as `pocket up` runs them), loads data, then times a scale-up from the decision to the new
/// node serving (started cold, and taken from the warm pool), and a drain of a loaded node from its start to the
/// node's removal, with the bytes it moved. Every object's checksum is verified afterwards.
/// </summary>
internal static class BenchElasticCommand
{
    private const int ObjectSize = 1 << 20;
    private const int Writers = 4;
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(5);

    public static Command Create()
    {
        var json = CommandRunner.JsonOption();
        var warmPool = new Option<int>("--warm-pool") { Description = "Idle standby nodes for the warm scale-up (0: measure the cold scale-up only)", DefaultValueFactory = _ => 1 };
        var bytes = CommandRunner.SizeOption("--bytes", 256L << 20, "Data loaded before scaling (in 1 MiB objects); the drained node holds about half");
        var inProcess = new Option<bool>("--in-process") { Description = "Run the storage nodes inside this process instead of as child processes" };
        var command = new Command("elastic", "Time a scale-up (cold and from the warm pool) and a drain of a loaded node")
        {
            json, warmPool, bytes, inProcess,
        };
        warmPool.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 16)
            {
                result.AddError("--warm-pool must be between 0 and 16");
            }
        });
        bytes.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long>() is < ObjectSize or > 64L << 30)
            {
                result.AddError("--bytes must be between 1MiB and 64GiB");
            }
        });
        CommandRunner.SetAction(command, (parse, ct) => RunAsync(parse.GetValue(bytes), parse.GetValue(warmPool), parse.GetValue(inProcess), parse.GetValue(json), ct));
        return command;
    }

    private static async Task<int> RunAsync(long bytes, int warmPool, bool inProcess, bool json, CancellationToken cancellationToken)
    {
        // Every node can hold all the data, so the drain never runs out of room and the load is ~50 % of two nodes.
        var capacity = Math.Max(bytes + (bytes / 4), 64L << 20);
        var options = new LocalClusterOptions
        {
            InitialNodes = 2,
            NodeCapacity = capacity,
            InProcess = inProcess,
            PreTouchMemory = false,
            WarmPool = warmPool,

            // The autoscaler only acts when told to: nothing is ever above 100 %, and a tier must be quiet for a day to shrink.
            Autoscaler = new AutoscalerOptions { Lower = 0.5, Upper = 1.0, MinNodes = 1, MaxNodes = 64, Cooldown = TimeSpan.FromDays(1), NewNodeCapacityBytes = capacity, Resources = ScalingResources.Capacity },
        };
        Progress(json, $"starting a cluster: 2 storage nodes of {Units.FormatBytes(capacity)} ({(inProcess ? "in-process" : "child processes")}), warm pool {warmPool}");
        var cluster = await LocalCluster.StartAsync(options, NullLoggerFactory.Instance, cancellationToken).ConfigureAwait(false);
        await using (cluster.ConfigureAwait(false))
        {
            var autoscaler = cluster.Controller.Autoscaler!;
            var client = await PocketClient.ConnectAsync(cluster.MetadataAddress, new PocketClientOptions(), cancellationToken).ConfigureAwait(false);
            await using (client.ConfigureAwait(false))
            {
                var job = await client.Admin(options.ClusterToken).RegisterJobAsync("bench-elastic", cancellationToken).ConfigureAwait(false);
                Progress(json, $"loading {Units.FormatBytes(bytes)}");
                var hashes = await LoadAsync(job, bytes, cancellationToken).ConfigureAwait(false);

                Progress(json, "scale-up, node started cold");
                var (cold, coldNode) = await TimeScaleUpAsync(client.Admin(options.ClusterToken), autoscaler, useWarmPool: false, cancellationToken).ConfigureAwait(false);

                double? warm = null;
                uint? warmNode = null;
                if (warmPool > 0 && cluster.Controller.WarmPool is { } pool)
                {
                    Progress(json, "waiting for the warm pool to fill");
                    await WaitUntilAsync(() => Task.FromResult(pool.Ready(NodeTier.Dram).Count >= warmPool), "the warm pool is full", cancellationToken).ConfigureAwait(false);
                    var standby = pool.Ready(NodeTier.Dram).Select(n => n.NodeId).ToHashSet();
                    Progress(json, "scale-up, node taken from the warm pool");
                    (var seconds, var node) = await TimeScaleUpAsync(client.Admin(options.ClusterToken), autoscaler, useWarmPool: true, cancellationToken).ConfigureAwait(false);
                    if (!standby.Contains(node))
                    {
                        var why = cluster.Controller.Events.Last(20).LastOrDefault(e => e.Kind == "pool-failed")?.Reason ?? "the pool was empty";
                        throw new CliException($"the warm scale-up started node {node} instead of taking one of the pool's ({string.Join(", ", standby)}): {why}");
                    }

                    (warm, warmNode) = (seconds, node);
                }

                // The fullest of the first nodes: the drain moves about half the data.
                var initial = cluster.InitialNodes.Select(n => n.NodeId).ToHashSet();
                var victim = (await client.Admin(options.ClusterToken).GetNodesAsync(cancellationToken).ConfigureAwait(false))
                    .Where(n => n.State == NodeState.Live && initial.Contains(n.Id))
                    .OrderByDescending(n => n.Used)
                    .First();
                Progress(json, $"draining node {victim.Id} ({Units.FormatBytes(victim.Used)} stored)");
                var clock = Stopwatch.StartNew();
                var moved = await autoscaler.RemoveNodeAsync(victim.Id, "bench: drain a loaded node", cancellationToken).ConfigureAwait(false);
                await WaitUntilAsync(async () => (await client.Admin(options.ClusterToken).GetNodesAsync(cancellationToken).ConfigureAwait(false)).All(n => n.Id != victim.Id), "the drained node leaves the node list", cancellationToken).ConfigureAwait(false);
                var drain = clock.Elapsed.TotalSeconds;
                if (cluster.Controller.Events.Last(100).LastOrDefault(e => e.Kind is "scale-failed" && e.NodeId == victim.Id) is { } failed)
                {
                    throw new CliException($"the drain of node {victim.Id} failed: {failed.Reason}");
                }

                Progress(json, $"verifying {hashes.Count} objects");
                var bad = await VerifyAsync(job, hashes, cancellationToken).ConfigureAwait(false);
                var result = new JsonObject
                {
                    ["scale_up_seconds"] = Round(cold),
                    ["scale_up_warm_seconds"] = warm is { } w ? Round(w) : null,
                    ["drain_seconds"] = Round(drain),
                    ["drained_bytes"] = moved,
                    ["loaded_bytes"] = hashes.Values.Sum(h => (long)h.Length),
                    ["objects"] = hashes.Count,
                    ["objects_verified"] = hashes.Count - bad.Count,
                    ["node_capacity_bytes"] = capacity,
                    ["warm_pool"] = warmPool,
                    ["storage_nodes"] = inProcess ? "in-process" : "child processes",
                    ["cold_node"] = coldNode,
                    ["warm_node"] = warmNode,
                    ["drained_node"] = victim.Id,
                };
                if (json)
                {
                    CommandRunner.WriteJson(result);
                }
                else
                {
                    var table = new Table().Border(TableBorder.Rounded).Title("pocket bench elastic")
                        .AddColumn("measure")
                        .AddColumn(new TableColumn("value").RightAligned());
                    table.AddRow("scale-up, cold (decision -> serving)", Seconds(cold));
                    table.AddRow("scale-up, warm pool (decision -> serving)", warm is { } ws ? Seconds(ws) : "-");
                    table.AddRow($"drain of node {victim.Id} (start -> removed)", Seconds(drain));
                    table.AddRow("bytes moved by the drain", Units.FormatBytes(moved));
                    table.AddRow("objects verified", string.Create(CultureInfo.InvariantCulture, $"{hashes.Count - bad.Count} of {hashes.Count}"));
                    AnsiConsole.Write(table);
                }

                foreach (var failure in bad.Take(10))
                {
                    CommandRunner.Fail(failure);
                }

                return bad.Count == 0 ? 0 : 1;
            }
        }
    }

    private static async Task<Dictionary<string, (byte[] Hash, int Length)>> LoadAsync(PocketJob job, long bytes, CancellationToken cancellationToken)
    {
        var count = (int)((bytes + ObjectSize - 1) / ObjectSize);
        var hashes = new ConcurrentDictionary<string, (byte[], int)>(StringComparer.Ordinal);
        await Parallel.ForAsync(0, count, new ParallelOptions { MaxDegreeOfParallelism = Writers, CancellationToken = cancellationToken }, async (i, ct) =>
        {
            var length = (int)Math.Min(ObjectSize, bytes - ((long)i * ObjectSize));
            var data = new byte[length];
            Random.Shared.NextBytes(data);
            var key = string.Create(CultureInfo.InvariantCulture, $"elastic/{i:D6}");
            await job.PutAsync(key, data, cancellationToken: ct).ConfigureAwait(false);
            hashes[key] = (SHA256.HashData(data), length);
        }).ConfigureAwait(false);
        return new Dictionary<string, (byte[] Hash, int Length)>(hashes, StringComparer.Ordinal);
    }

    /// <summary>Decision to serving: the autoscaler's scale-up, then until the metadata server lists the node live.</summary>
    private static async Task<(double Seconds, uint Node)> TimeScaleUpAsync(PocketAdminClient admin, Autoscaler autoscaler, bool useWarmPool, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var node = await autoscaler.ScaleUpAsync(NodeTier.Dram, useWarmPool ? "bench: scale-up from the warm pool" : "bench: cold scale-up", useWarmPool, cancellationToken).ConfigureAwait(false);
        var id = node.NodeId ?? throw new CliException("the provisioner did not report the new node's id");
        await WaitUntilAsync(async () => (await admin.GetNodesAsync(cancellationToken).ConfigureAwait(false)).Any(n => n.Id == id && n.State == NodeState.Live), $"node {id} serves", cancellationToken).ConfigureAwait(false);
        return (clock.Elapsed.TotalSeconds, id);
    }

    private static async Task<List<string>> VerifyAsync(PocketJob job, Dictionary<string, (byte[] Hash, int Length)> hashes, CancellationToken cancellationToken)
    {
        var bad = new ConcurrentQueue<string>();
        await Parallel.ForEachAsync(hashes, new ParallelOptions { MaxDegreeOfParallelism = Writers, CancellationToken = cancellationToken }, async (entry, ct) =>
        {
            try
            {
                var data = await job.GetAsync(entry.Key, cancellationToken: ct).ConfigureAwait(false);
                if (data.Length != entry.Value.Length || !SHA256.HashData(data).AsSpan().SequenceEqual(entry.Value.Hash))
                {
                    bad.Enqueue($"{entry.Key}: wrong bytes after the drain");
                }
            }
            catch (PocketException ex)
            {
                bad.Enqueue($"{entry.Key}: {ex.Message}");
            }
        }).ConfigureAwait(false);
        return [.. bad];
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        while (!await condition().ConfigureAwait(false))
        {
            if (deadline.Elapsed > Patience)
            {
                throw new CliException($"timed out after {Patience.TotalMinutes:0} min waiting until {what}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(5), cancellationToken).ConfigureAwait(false);
        }
    }

    private static void Progress(bool json, string message)
    {
        if (!json)
        {
            AnsiConsole.MarkupLine($"[grey]{Markup.Escape(message)}[/]");
        }
    }

    private static double Round(double seconds) => Math.Round(seconds, 4);

    private static string Seconds(double seconds) => seconds.ToString(seconds < 1 ? "0.0000" : "0.00", CultureInfo.InvariantCulture) + " s";
}
