using System.Text.Json.Nodes;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket bench` and `pocket bench sort` as scripts run them: --json with a few operations, on the bench's own cluster
/// (child processes, so the servers' CPU is theirs alone), in a job the user gave, and through the shuffle stores
/// that need no server of their own (Pocket and a directory). Redis and Garnet are left to bench/compare.sh, which
/// installs them: a test machine need not have them.
/// </summary>
public sealed class BenchTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task ABenchWorkerThatFailsOnAnUnexpectedErrorRepliesOneLineNamingItsTargetAndExitsOne()
    {
        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        await using var core = await Pocket.Embedded.PocketCluster.StartAsync(new Pocket.Embedded.PocketClusterOptions { StorageNodes = 1, NodeCapacity = 32L << 20, PreTouchMemory = false }, cancellationToken: cts.Token);
        await using var client = await core.ConnectAsync(cancellationToken: cts.Token);
        var job = await Pocket.Admin.PocketAdminExtensions.Admin(client, core.Options.ClusterToken).RegisterJobAsync("worker", cts.Token);
        var spec = new JsonObject
        {
            ["worker"] = 3,
            ["connections"] = 1,
            ["size"] = 16,
            ["ops"] = 10,
            ["warmupSeconds"] = 0,
            ["keysPerRound"] = 1,
            ["poolKeys"] = 1,
            ["readsData"] = false,
            ["root"] = "w/",
            ["metadata"] = core.MetadataAddress,
            ["jobId"] = job.Id,
            ["jobToken"] = job.Token.ToString(),
        };

        // A pool of -1 objects is nothing the parent sends: the worker fails on it with an ArgumentOutOfRangeException,
        // which stands for any error it does not expect.
        var (exit, stdout, stderr) = await RunWorkerAsync(spec.ToJsonString(), """{"command":"run","op":"get","pool":-1}""");
        Assert.True(exit == 1, $"exit {exit}\n{stdout}\n{stderr}");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("ready", JsonNode.Parse(lines[0])!["kind"]!.GetValue<string>());
        var failed = JsonNode.Parse(Assert.Single(lines, l => l.Contains("failed", StringComparison.Ordinal)))!;
        var error = failed["error"]!.GetValue<string>();
        Assert.StartsWith($"against Pocket at {core.MetadataAddress} (job {job.Id}): ArgumentOutOfRangeException", error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);

        // A spec line that is not JSON: one error line, exit 1.
        (exit, stdout, stderr) = await RunWorkerAsync("{not json");
        Assert.True(exit == 1, $"exit {exit}\n{stdout}\n{stderr}");
        Assert.Contains("error: bench worker: the spec line is not a spec", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);

        async Task<(int Exit, string Stdout, string Stderr)> RunWorkerAsync(params string[] input)
        {
            using var worker = System.Diagnostics.Process.Start(PocketProcess.StartInfo(_home.Path, ["bench", "worker"]))!;
            var output = worker.StandardOutput.ReadToEndAsync(cts.Token);
            var errors = worker.StandardError.ReadToEndAsync(cts.Token);
            foreach (var line in input)
            {
                await worker.StandardInput.WriteLineAsync(line);
            }

            worker.StandardInput.Close();
            await worker.WaitForExitAsync(cts.Token);
            return (worker.ExitCode, await output, await errors);
        }
    }

    [Fact]
    public async Task BenchJsonReportsTheServerCpuOfItsOwnClusterProcesses()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--ops", "3000", "--warmup", "0s", "--size", "1KiB", "--op", "put,get", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        var pocket = report["systems"]!["pocket"]!;
        foreach (var op in new[] { "put", "get" })
        {
            var figures = pocket[op]!;
            Assert.Equal(3000, figures["ops"]!.GetValue<long>());
            foreach (var field in new[] { "p50_us", "p99_us", "p999_us", "ops_per_s", "mib_per_s" })
            {
                Assert.True(figures[field]!.GetValue<double>() > 0, $"{op} {field}: {result}");
            }

            // Three servers doing 3000 requests use far more than one 10 ms tick.
            Assert.True(figures["server_cpu_us_per_op"]?.GetValue<double>() > 0, $"{op} server CPU: {result}");
            Assert.StartsWith("metadata + 2 storage processes", figures["server_cpu_scope"]!.GetValue<string>(), StringComparison.Ordinal);
        }

        var config = report["config"]!;
        Assert.Equal("dram", config["tier"]!.GetValue<string>());
        Assert.False(config["job_given"]!.GetValue<bool>());
        Assert.Contains("child processes", config["pocket"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchConnectionsGivesEachClientItsOwnConnectionAndReportsTheFanIn()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "8", "--ops", "800", "--warmup", "0s", "--size", "1KiB", "--op", "put,get", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        Assert.Equal(8, report["config"]!["clients"]!.GetValue<int>());
        var fanIn = report["fan_in"]!["pocket"]!;
        Assert.Equal(8, fanIn["connections"]!.GetValue<int>());
        Assert.Equal(0, fanIn["refused"]!.GetValue<int>());
        Assert.Equal(0, fanIn["failed"]!.GetValue<int>());
        Assert.True(fanIn["connect_ms"]!.GetValue<double>() > 0, result.ToString());
        foreach (var op in new[] { "put", "get" })
        {
            var figures = report["systems"]!["pocket"]![op]!;
            Assert.Equal(800, figures["ops"]!.GetValue<long>());
            AssertClientSpread(figures, clients: 8, ops: 800);
        }

        Assert.Contains("pocket: 8 connections in", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchProcessesSpreadsTheConnectionsOverWorkerProcessesAndMergesTheirCounts()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "9", "--processes", "2", "--ops", "901", "--warmup", "100ms", "--size", "1KiB",
            "--op", "put,get,lookup", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        var fanIn = report["fan_in"]!["pocket"]!;
        Assert.Equal(9, fanIn["connections"]!.GetValue<int>());
        Assert.Equal(2, fanIn["processes"]!.GetValue<int>());
        Assert.Equal(2, fanIn["connect_ms_per_process"]!.AsArray().Count);
        Assert.Equal(0, fanIn["refused"]!.GetValue<int>());
        Assert.Equal(0, fanIn["failed"]!.GetValue<int>());
        foreach (var op in new[] { "put", "get", "lookup" })
        {
            // 451 + 450 ops from the two workers, every one timed into the merged histogram.
            var figures = report["systems"]!["pocket"]![op]!;
            Assert.Equal(901, figures["ops"]!.GetValue<long>());
            Assert.Equal(901, figures["samples"]!.GetValue<long>());
            Assert.True(figures["p99_us"]!.GetValue<long>() >= figures["p50_us"]!.GetValue<long>(), result.ToString());
            Assert.NotNull(figures["server_cpu_us_per_op"]);
            AssertClientSpread(figures, clients: 9, ops: 901);
        }

        Assert.Contains("pocket: starting 2 worker processes for 9 connections", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("pocket get: measuring in 2 processes", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchProcessesGivesARespPeerItsOwnConnectionsInEachWorkerProcess()
    {
        // test.sh installs redis-server (the Python client's examples use it too).
        await using var redis = await RedisProcess.StartAsync();

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "6", "--processes", "2", "--ops", "600", "--warmup", "100ms", "--size", "1KiB",
            "--op", "get", "--node-capacity", "64MiB", "--vs", $"redis=resp://127.0.0.1:{redis.Port}", "--json");

        var report = result.Json();
        foreach (var system in new[] { "pocket", "redis" })
        {
            var fanIn = report["fan_in"]![system]!;
            Assert.Equal(6, fanIn["connections"]!.GetValue<int>());
            Assert.Equal(2, fanIn["processes"]!.GetValue<int>());
            Assert.Equal(0, fanIn["refused"]!.GetValue<int>());

            // The workers read the objects the parent wrote (under the parent's key root): a missing key fails the run.
            var get = report["systems"]![system]!["get"]!;
            Assert.Equal(600, get["ops"]!.GetValue<long>());
            Assert.Equal(600, get["samples"]!.GetValue<long>());
        }

        // The bench deleted every key it wrote in Redis, the workers' included.
        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    [Fact]
    public async Task BenchColdTimesAFreshClientOfEachSystemAndLeavesNoKeysBehind()
    {
        // test.sh installs redis-server.
        await using var redis = await RedisProcess.StartAsync();
        var connectedBefore = await redis.InfoFieldAsync("stats", "total_connections_received");

        var result = await PocketProcess.RunOkAsync(
            _home.Path, "bench", "cold", "--runs", "5", "--size", "1KiB", "--warmup", "1s", "--vs", $"redis=resp://127.0.0.1:{redis.Port}", "--json");

        var report = result.Json();
        Assert.Equal(5, report["runs"]!.GetValue<int>());
        Assert.Equal(1.0, report["warmup_s"]!.GetValue<double>());
        Assert.Equal(1024, report["size"]!.GetValue<int>());
        foreach (var system in new[] { "pocket", "redis" })
        {
            foreach (var phase in new[] { "connect", "first_put", "first_get", "total" })
            {
                var figures = report["systems"]![system]![phase]!;
                Assert.True(figures["p50_us"]!.GetValue<double>() > 0, $"{system} {phase} p50");
                Assert.True(figures["p99_us"]!.GetValue<double>() >= figures["p50_us"]!.GetValue<double>(), $"{system} {phase} p99");
            }
        }

        // Each run was a fresh connection, the untimed warm-up's too (at least one before the 5 timed), and every key
        // written was deleted.
        var connectedAfter = await redis.InfoFieldAsync("stats", "total_connections_received");
        Assert.True(connectedAfter - connectedBefore >= 6, $"{connectedAfter - connectedBefore} connections for 5 runs and a warm-up");
        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    /// <summary>
    /// The runs' objects together are more than the bench's own cluster holds (9 x 64 MiB against two 256 MiB nodes):
    /// each run's object is deleted after it, untimed, as the peers' keys are. Before, the eighth put failed with
    /// "capacity exceeded".
    /// </summary>
    [Fact]
    public async Task BenchColdRunsMoreThanItsClusterHoldsAtOnce()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path, "bench", "cold", "--runs", "9", "--size", "64MiB", "--warmup", "0s", "--json");

        var report = result.Json();
        Assert.Equal(9, report["runs"]!.GetValue<int>());
        Assert.True(report["systems"]!["pocket"]!["first_put"]!["p50_us"]!.GetValue<double>() > 0, result.ToString());
    }

    [Fact]
    public async Task BenchConnectionsDrivesARespPeerOverOneRawConnectionPerClient()
    {
        // test.sh installs redis-server (the Python client's examples use it too).
        await using var redis = await RedisProcess.StartAsync();
        var connectedBefore = await redis.InfoFieldAsync("stats", "total_connections_received");

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "8", "--ops", "400", "--warmup", "0s", "--size", "1KiB", "--op", "put,get,meta",
            "--node-capacity", "64MiB", "--vs", $"redis=resp://127.0.0.1:{redis.Port}", "--json");

        var report = result.Json();
        var fanIn = report["fan_in"]!["redis"]!;
        Assert.Equal(8, fanIn["connections"]!.GetValue<int>());
        Assert.Equal(0, fanIn["refused"]!.GetValue<int>());
        Assert.Equal(0, fanIn["failed"]!.GetValue<int>());

        // Every op ran over the clients' own connections and counted each command (a wrong GET length, a missing key,
        // a list of fewer than 100 keys or a count other than 100 fails the run instead).
        foreach (var op in new[] { "put", "get", "lookup", "create_delete", "list100", "count" })
        {
            var figures = report["systems"]!["redis"]![op]!;
            Assert.True(figures["ops"]!.GetValue<long>() >= 400, $"{op}: {figures}");
            Assert.Equal(figures["ops"]!.GetValue<long>(), figures["samples"]!.GetValue<long>());
        }

        // The 8 clients' connections besides the shared multiplexer's, and every key written was deleted again.
        var connected = await redis.InfoFieldAsync("stats", "total_connections_received") - connectedBefore;
        Assert.True(connected >= 8 + 1, $"{connected} connections received");
        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    [Theory]
    [InlineData("--processes 2", "give --connections N too")]
    [InlineData("--connections 2 --processes 3", "--processes must be between 1 and 2")]
    [InlineData("--connections 8 --processes 0", "--processes must be between 1 and 8")]
    public async Task BenchRefusesProcessesWithoutConnectionsOrMoreProcessesThanConnections(string arguments, string message)
    {
        var result = await PocketProcess.RunAsync(_home.Path, ["bench", .. arguments.Split(' ')]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchRefusesClientsAndConnectionsTogether()
    {
        var result = await PocketProcess.RunAsync(_home.Path, "bench", "--clients", "4", "--connections", "8");

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("not both", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchInProcessReportsNoServerCpuAndSaysWhy()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--in-process", "--ops", "200", "--warmup", "0s", "--op", "put", "--node-capacity", "64MiB", "--json");

        var put = result.Json()["systems"]!["pocket"]!["put"]!;
        Assert.Null(put["server_cpu_us_per_op"]);
        Assert.Contains("--in-process", put["server_cpu_scope"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchRunsAnSsdClusterInADataDirItCleansUp()
    {
        var dataDir = Directory.CreateDirectory(_home.File("data")).FullName;

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--tier", "ssd", "--data-dir", dataDir, "--ops", "50", "--warmup", "0s", "--size", "256KiB", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        Assert.Equal("ssd", report["config"]!["tier"]!.GetValue<string>());
        Assert.Contains("ssd nodes", report["config"]!["pocket"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(50, report["systems"]!["pocket"]!["get"]!["ops"]!.GetValue<long>());
        Assert.Contains(dataDir, result.Stderr, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dataDir));
    }

    [Fact]
    public async Task BenchJobRunsInTheGivenJobAndLeavesItRegisteredWithItsObjects()
    {
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--nodes", "2", "--capacity", "128MiB", "--no-gateway", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var jobId = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "mine", "--json")).Json()["id"]!.GetValue<string>();
        var kept = _home.File("kept.txt");
        await File.WriteAllTextAsync(kept, "the job's own object");
        await PocketProcess.RunOkAsync(_home.Path, "put", kept, $"{jobId}/kept");

        var result = await PocketProcess.RunOkAsync(_home.Path, "bench", "--job", jobId, "--ops", "300", "--warmup", "0s", "--size", "4KiB", "--json");

        var report = result.Json();
        Assert.Equal(jobId, report["config"]!["job"]!.GetValue<string>());
        Assert.True(report["config"]!["job_given"]!.GetValue<bool>());
        Assert.Equal(300, report["systems"]!["pocket"]!["put"]!["ops"]!.GetValue<long>());
        Assert.Equal(300, report["systems"]!["pocket"]!["get"]!["ops"]!.GetValue<long>());

        // `pocket up`'s metadata server and nodes listen on loopback ports of this machine: their CPU is read from /proc.
        var put = report["systems"]!["pocket"]!["put"]!;
        Assert.StartsWith("server processes ", put["server_cpu_scope"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.NotNull(put["server_cpu_us_per_op"]);

        // The job is still registered, holds its own object, and nothing the bench wrote.
        var jobs = (await PocketProcess.RunOkAsync(_home.Path, "job", "ls", "--json")).Json().AsArray();
        Assert.Contains(jobs, j => j!["id"]!.GetValue<string>() == jobId);
        var listed = (await PocketProcess.RunOkAsync(_home.Path, "ls", jobId, "--recursive", "--json")).Json().AsArray();
        Assert.Equal(["kept"], listed.Select(e => e!["key"]!.GetValue<string>()));

        var wrong = await PocketProcess.RunAsync(_home.Path, "bench", "--job", "no-such-job", "--ops", "1");
        Assert.Equal(1, wrong.ExitCode);
        Assert.Contains("unknown job 'no-such-job'", wrong.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BenchSortThroughPocketAndADirectoryVerifiesAndMovesTheSameBytes()
    {
        const long Size = 4L << 20;
        var dir = Directory.CreateDirectory(_home.File("shuffle")).FullName;

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "sort", "--store", "pocket,dir", "--size", "4MiB", "--mappers", "3", "--reducers", "2", "--dir", dir, "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        Assert.Equal(["pocket", "dir"], report["config"]!["stores_order"]!.AsArray().Select(s => s!.GetValue<string>()));
        var records = Size / 100;
        Assert.Equal(records, report["config"]!["records"]!.GetValue<long>());
        var stores = report["stores"]!;
        foreach (var name in new[] { "pocket", "dir" })
        {
            var store = stores[name]!;
            Assert.True(store["verified"]!.GetValue<bool>(), $"{name}: {result}");
            Assert.True(store["job_seconds"]!.GetValue<double>() > 0);
            foreach (var phase in new[] { "generate", "map", "reduce", "verify" })
            {
                Assert.Equal(records, store["phases"]![phase]!["records"]!.GetValue<long>());
            }

            // Input written once, read by the mappers; shuffle written and read once; output written and read back.
            Assert.Equal(3 * records * 100, store["bytes_written"]!.GetValue<long>());
            Assert.Equal(3 * records * 100, store["bytes_read"]!.GetValue<long>());
            Assert.Equal(3 + (3 * 2) + 2, store["puts"]!.GetValue<long>());
        }

        Assert.Equal(stores["pocket"]!["bytes_moved"]!.GetValue<long>(), stores["dir"]!["bytes_moved"]!.GetValue<long>());
        Assert.True(stores["pocket"]!["server_cpu_s"] is null || stores["pocket"]!["server_cpu_s"]!.GetValue<double>() >= 0);
        Assert.Null(stores["dir"]!["server_cpu_s"]);
        Assert.True(report["ratios"]!["dir"]!["job_seconds"]!.GetValue<double>() > 0);

        // The directory store removed what it wrote.
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
    }

    [Theory]
    [InlineData("bogus", "--store 'bogus' is not pocket, redis, garnet, dir")]
    [InlineData("pocket,pocket", "--store 'pocket' is given twice")]
    public async Task BenchSortRejectsABadStoreWithOneClearLine(string store, string message)
    {
        var result = await PocketProcess.RunAsync(_home.Path, "bench", "sort", "--store", store);

        Assert.Equal(1, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Theory]
    [InlineData("bench --tier tape")]
    [InlineData("bench sort --store pocket --tier tape")]
    [InlineData("storage --metadata 127.0.0.1:1 --tier tape")]
    public async Task AnUnknownTierIsRefusedWithOneLineNamingTheTiers(string arguments)
    {
        var result = await PocketProcess.RunAsync(_home.Path, arguments.Split(' '));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--tier: unknown tier 'tape' (tiers: dram, ssd, hdd)", result.Stderr, StringComparison.Ordinal);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task BenchRejectsClusterOptionsWithAJob()
    {
        var result = await PocketProcess.RunAsync(_home.Path, "bench", "--job", "x", "--tier", "ssd");

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--tier shapes the bench's own cluster", result.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// The per-client counts came through (from every worker, for the processes test): the slowest and busiest clients
    /// bracket the mean, and the slowest's share of the mean is what its count says.
    /// </summary>
    private static void AssertClientSpread(JsonNode figures, int clients, long ops)
    {
        var spread = figures["client_ops"]!;
        var min = spread["min"]!.GetValue<long>();
        var median = spread["p50"]!.GetValue<long>();
        var max = spread["max"]!.GetValue<long>();
        Assert.True(min <= median && median <= max, spread.ToJsonString());
        Assert.True(min * clients <= ops && ops <= max * clients, spread.ToJsonString());
        Assert.Equal(Math.Round(min / ((double)ops / clients), 3), spread["min_of_mean"]!.GetValue<double>(), 3);
    }
}
