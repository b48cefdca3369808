using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Benchmarks;

/// <summary>
/// One drain, timed, against a metadata server and two storage nodes running as their own processes (bench/drain.sh
/// starts them): loads <c>MIB</c> objects of 1 MiB onto the first node, drains it onto the second, and reads the
/// metadata server's CPU time and peak RSS (/proc) around the drain. Verifies every object afterwards. Prints one JSON
/// line. The cluster token comes from $POCKET_CLUSTER_TOKEN.
///
///   dotnet run -c Release --project bench/Pocket.Benchmarks -- --drain METADATA_ADDRESS METADATA_PID [MIB]
/// </summary>
internal static class DrainProfile
{
    private const int ObjectSize = 1 << 20;

    // /proc/PID/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
    private const double TicksPerSecond = 100;

    public static async Task<int> RunAsync(string address, int metadataPid, int objects)
    {
        if (!JobToken.TryParse(Environment.GetEnvironmentVariable("POCKET_CLUSTER_TOKEN"), out var clusterToken))
        {
            Console.Error.WriteLine("set POCKET_CLUSTER_TOKEN to the cluster token");
            return 2;
        }

        await using var client = await PocketClient.ConnectAsync(address, new PocketClientOptions());
        var admin = client.Admin(clusterToken);
        var nodes = (await admin.GetNodesAsync()).OrderBy(n => n.Id).ToList();
        if (nodes.Count != 2)
        {
            Console.Error.WriteLine($"expected 2 storage nodes, found {nodes.Count}");
            return 2;
        }

        var (victim, target) = (nodes[0].Id, nodes[1].Id);
        var job = await admin.RegisterJobAsync("drain-bench");
        await admin.SetWeightsAsync(job.Id, new Dictionary<uint, double> { [victim] = 1 });
        var seed = RandomNumberGenerator.GetBytes(ObjectSize);
        byte[] DataFor(int i)
        {
            var data = (byte[])seed.Clone();
            BitConverter.TryWriteBytes(data, i);
            return data;
        }

        await Parallel.ForAsync(0, objects, new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, ct) => await job.PutAsync($"o/{i}", DataFor(i), cancellationToken: ct));
        await admin.SetWeightsAsync(job.Id, new Dictionary<uint, double>());

        var (cpuBefore, peakBefore) = (CpuSeconds(metadataPid), PeakRssMiB(metadataPid));
        var clock = Stopwatch.StartNew();
        await admin.DrainNodeAsync(victim);
        NodeInfo drained;
        while ((drained = (await admin.GetNodesAsync()).Single(n => n.Id == victim)).State != NodeState.Drained)
        {
            await Task.Delay(10);
        }

        var seconds = clock.Elapsed.TotalSeconds;
        var (cpuAfter, peakAfter) = (CpuSeconds(metadataPid), PeakRssMiB(metadataPid));

        var bad = 0;
        var buffer = new byte[ObjectSize];
        for (var i = 0; i < objects; i++)
        {
            var info = await job.LookupAsync($"o/{i}");
            await job.GetAsync($"o/{i}", 0, buffer);
            if (info is null || info.Blocks.Any(b => b.NodeId != target) || !buffer.AsSpan().SequenceEqual(DataFor(i)))
            {
                bad++;
            }
        }

        Console.WriteLine(new JsonObject
        {
            ["moved_bytes"] = drained.MovedBytes,
            ["seconds"] = Math.Round(seconds, 3),
            ["mb_per_s"] = Math.Round(drained.MovedBytes / 1e6 / seconds, 1),
            ["metadata_cpu_seconds"] = Math.Round(cpuAfter - cpuBefore, 2),
            ["metadata_peak_rss_mib_before"] = peakBefore,
            ["metadata_peak_rss_mib_after"] = peakAfter,
            ["objects_wrong"] = bad,
        }.ToJsonString());
        return bad == 0 ? 0 : 1;
    }

    private static double CpuSeconds(int pid)
    {
        // The fields after the command name (which may hold spaces), from the third: utime and stime are the 14th and 15th.
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
    }

    private static long PeakRssMiB(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
    }
}
