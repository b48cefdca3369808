using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket up` with storage nodes as child processes, driven by the client verbs through its controller, and stopped
/// by SIGTERM or --for: afterwards no process it started is left.
/// </summary>
public sealed partial class UpTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task UpServesJobsThroughTheControllerAndStopsEveryChildOnSIGTERM()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return; // SIGTERM is a Unix signal; Ctrl-C on Windows is exercised by hand.
        }

        // --idle-timeout reaches the child nodes too: they would not start if they refused it. --inline-capacity 0
        // reaches the metadata child: a small object then goes through the nodes (below).
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "2", "--capacity", "128MiB", "--idle-timeout", "10m", "--inline-capacity", "0", "--for", "10m");
        var children = await ChildPidsAsync(up, expected: 2);

        var cluster = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        var controller = cluster["controller"]!.GetValue<string>();
        Assert.StartsWith("http://127.0.0.1:", controller, StringComparison.Ordinal);
        Assert.Equal(up.Pid, cluster["pid"]!.GetValue<int>());

        // Registration goes through the controller; the token lands in jobs.json (private) for the data verbs.
        var registered = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "cli", "--functions", "2", "--throughput", "1Gbps", "--capacity", "64MiB", "--lease", "1h", "--json")).Json();
        var jobId = registered["id"]!.GetValue<string>();
        Assert.Equal(3600, registered["leaseSeconds"]!.GetValue<double>());
        Assert.Equal(controller, registered["controller"]!.GetValue<string>());
        Assert.Equal(cluster["metadata"]!.GetValue<string>(), registered["metadata"]!.GetValue<string>());
        Assert.Equal("dram", registered["tier"]!.GetValue<string>());
        Assert.Equal(1.0, registered["nodes"]!.AsArray().Sum(n => n!["weight"]!.GetValue<double>()), 6);
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_home.File("jobs.json")));
        }

        // put / get / stat with JOB/KEY, large enough to be striped over blocks.
        var data = new byte[(3 << 20) + 12345];
        Random.Shared.NextBytes(data);
        var source = _home.File("in.bin");
        var copy = _home.File("out.bin");
        await File.WriteAllBytesAsync(source, data);
        await PocketProcess.RunOkAsync(_home.Path, "put", source, $"{jobId}/dir/object");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/dir/object", copy);
        Assert.Equal(data, await File.ReadAllBytesAsync(copy));
        // Another user (another $POCKET_HOME) adopts the job by id and token and reads the same object; a wrong token is refused.
        using (var other = new TempHome())
        {
            var metadataAddress = cluster["metadata"]!.GetValue<string>();
            var token = registered["token"]!.GetValue<string>();
            var added = await PocketProcess.RunOkAsync(other.Path, "job", "add", jobId, token, "--metadata", metadataAddress);
            Assert.Contains("it holds 1 objects", added.Stdout, StringComparison.Ordinal);
            var adoptedCopy = other.File("adopted.bin");
            await PocketProcess.RunOkAsync(other.Path, "get", $"{jobId}/dir/object", adoptedCopy);
            Assert.Equal(data, await File.ReadAllBytesAsync(adoptedCopy));
            var wrong = await PocketProcess.RunAsync(other.Path, "job", "add", "cli-99", Pocket.Protocol.JobToken.NewRandom().ToString(), "--metadata", metadataAddress);
            Assert.True(wrong.ExitCode == 1, wrong.ToString());
            Assert.Contains("refused job cli-99's token: unknown job token", wrong.Stderr, StringComparison.Ordinal);
        }

        var stat = (await PocketProcess.RunOkAsync(_home.Path, "stat", $"{jobId}/dir/object", "--json")).Json();
        Assert.Equal(data.Length, stat["size"]!.GetValue<long>());
        Assert.NotEmpty(stat["blocks"]!.AsArray());

        // A 1 KiB object, inline by default, is written through the nodes: the metadata server keeps nothing inline.
        var small = _home.File("small.bin");
        await File.WriteAllBytesAsync(small, data.AsSpan(0, 1024).ToArray());
        await PocketProcess.RunOkAsync(_home.Path, "put", small, $"{jobId}/small");
        var smallStat = (await PocketProcess.RunOkAsync(_home.Path, "stat", $"{jobId}/small", "--json")).Json();
        Assert.NotEmpty(smallStat["blocks"]!.AsArray());
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/small", copy);
        Assert.Equal(data.AsSpan(0, 1024).ToArray(), await File.ReadAllBytesAsync(copy));

        // status --json: the nodes and the job, with what it stores.
        var status = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json();
        Assert.True(status["nodes"]!.AsArray().Count(n => n!["state"]!.GetValue<string>() == "live") >= 2);
        var job = Assert.Single(status["jobs"]!.AsArray(), j => j!["id"]!.GetValue<string>() == jobId)!;
        Assert.True(job["bytes"]!.GetValue<long>() >= data.Length, status.ToJsonString());

        var listed = (await PocketProcess.RunOkAsync(_home.Path, "job", "ls", "--json")).Json().AsArray();
        Assert.True(Assert.Single(listed, j => j!["id"]!.GetValue<string>() == jobId)!["localToken"]!.GetValue<bool>());

        // The controller takes cluster.json's token; a wrong one in $POCKET_CLUSTER_TOKEN is refused by name.
        var wrongToken = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = new string('0', 31) + "1" };
        foreach (var verb in new[] { new[] { "status" }, ["job", "ls"], ["job", "rm", jobId], ["job", "register", "x"] })
        {
            var refused = await PocketProcess.RunAsync(_home.Path, wrongToken, verb);
            Assert.True(refused.ExitCode == 1, $"pocket {string.Join(' ', verb)}: {refused}");
            Assert.Contains("refused the cluster token", refused.Stderr, StringComparison.Ordinal);
            Assert.Contains("POCKET_CLUSTER_TOKEN", refused.Stderr, StringComparison.Ordinal);
        }

        var removed = await PocketProcess.RunOkAsync(_home.Path, "job", "rm", jobId);
        Assert.Contains("freed 2 objects", removed.Stdout, StringComparison.Ordinal);
        Assert.Empty((await PocketProcess.RunOkAsync(_home.Path, "job", "ls", "--json")).Json().AsArray());
        Assert.DoesNotContain(jobId, await File.ReadAllTextAsync(_home.File("jobs.json")), StringComparison.Ordinal);

        PocketProcess.Terminate(up.Pid);
        Assert.Equal(0, await up.WaitForExitAsync());
        Assert.Contains("stopped", up.Output, StringComparison.Ordinal);
        Assert.False(File.Exists(_home.File("cluster.json")), "cluster.json outlived the cluster");
        await AssertGoneAsync(children);
    }

    [Fact]
    public async Task UpStopsByItselfAfterForAndLeavesNoChild()
    {
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "1", "--capacity", "64MiB", "--for", "1s");
        // No check that they run: with --for 1s they may be stopping already.
        var children = await ChildPidsAsync(up, expected: 1, checkRunning: false);

        Assert.Equal(0, await up.WaitForExitAsync());
        Assert.False(File.Exists(_home.File("cluster.json")));
        await AssertGoneAsync(children);
    }

    [Fact]
    public async Task UpStartedWithSIGINTIgnoredStillStopsOnSIGINTAndLeavesNoChild()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return; // SIGINT's inherited disposition is a Unix matter.
        }

        await using var up = UpProcess.StartWithInterruptIgnored(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "1", "--capacity", "64MiB", "--for", "10m");
        var children = await ChildPidsAsync(up, expected: 1);

        PocketProcess.Interrupt(up.Pid);
        Assert.Equal(0, await up.WaitForExitAsync());
        Assert.Contains("stopped", up.Output, StringComparison.Ordinal);
        Assert.False(File.Exists(_home.File("cluster.json")), "cluster.json outlived the cluster");
        await AssertGoneAsync(children);
    }

    [Fact]
    public async Task StatusListsEveryMetadataServerWithItsJobs()
    {
        await using var up = UpProcess.Start(_home.Path, "--in-process", "--metadata", "2", "--port", "0", "--controller-port", "0", "--no-gateway", "--nodes", "2", "--capacity", "128MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        foreach (var name in new[] { "first", "second" })
        {
            await PocketProcess.RunOkAsync(_home.Path, "job", "register", name, "--capacity", "16MiB", "--json");
        }

        var status = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json();
        var servers = status["metadataServers"]!.AsArray();
        Assert.Equal(2, servers.Count);
        Assert.Equal(status["metadata"]!.GetValue<string>(), servers[0]!["address"]!.GetValue<string>());
        Assert.All(servers, s => Assert.Equal(1, s!["jobs"]!.GetValue<int>()));
        Assert.All(servers, s => Assert.True(s!["reachable"]!.GetValue<bool>()));

        var text = await PocketProcess.RunOkAsync(_home.Path, "status");
        Assert.Contains("metadata servers: ", text.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DemoRunsAgainstTheControllerOfARunningCluster()
    {
        await using var up = UpProcess.Start(_home.Path, "--in-process", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "2", "--capacity", "128MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var controller = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!["controller"]!.GetValue<string>();

        var report = (await PocketProcess.RunOkAsync(_home.Path, "demo", "--controller", controller, "--size", "2MiB", "--mappers", "2", "--reducers", "3", "--json")).Json();

        Assert.True(report["verified"]!.GetValue<bool>());
        Assert.False(report["embedded"]!.GetValue<bool>());
        Assert.Equal(controller, report["controller"]!.GetValue<string>());

        // The demo deregistered its job: the controller holds none.
        var status = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json();
        Assert.Empty(status["jobs"]!.AsArray());
    }

    [Fact]
    public async Task RoleCommandsRefuseAnIdleTimeoutThatIsNotADuration()
    {
        foreach (var role in new[] { new[] { "metadata" }, ["storage", "--metadata", "127.0.0.1:1"], ["up"] })
        {
            var result = await PocketProcess.RunAsync(_home.Path, [.. role, "--idle-timeout", "soon"]);
            Assert.NotEqual(0, result.ExitCode);
            Assert.Contains("'soon' is not a duration", result.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ClientVerbsWithoutAClusterSayHowToGetOne()
    {
        var status = await PocketProcess.RunAsync(_home.Path, "status");
        Assert.Equal(1, status.ExitCode);
        Assert.Contains("pocket up", status.Stderr, StringComparison.Ordinal);

        var register = await PocketProcess.RunAsync(_home.Path, "job", "register", "x", "--controller", "http://127.0.0.1:1");
        Assert.Equal(1, register.ExitCode);
        Assert.Contains("cannot reach the controller", register.Stderr, StringComparison.Ordinal);

        // The controller role needs the cluster token: a made-up one would lock every caller of its API out.
        var controller = await PocketProcess.RunAsync(_home.Path, "controller", "--metadata", "127.0.0.1:1", "--provisioner", "none");
        Assert.Equal(1, controller.ExitCode);
        Assert.Contains("set POCKET_CLUSTER_TOKEN", controller.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpWithTiersPlacesAJobOnSsdSpillsToHddAndReportsBytesPerTier()
    {
        var data = Path.Combine(_home.Path, "tier-data");

        // DRAM nodes of 4 MiB make a 20 MiB job cheapest on ssd (2 x 16 MiB nodes, $0.624/h each) rather than on five
        // DRAM nodes or on four hdd nodes (their 320 Mb/s does not carry 1 Gb/s). Static: the test fills every tier and
        // expects the refusal, where an elastic cluster would add nodes.
        await using var up = UpProcess.Start(
            _home.Path, "--static", "--port", "0", "--controller-port", "0", "--no-gateway", "--tiers", "dram=1,ssd=1,hdd=1",
            "--capacity", "4MiB", "--node-capacity", "ssd=16MiB,hdd=16MiB", "--data-dir", data, "--for", "10m");
        var children = await ChildPidsAsync(up, expected: 3);
        Assert.Contains(up.Output.Split('\n'), l => l.Contains("ssd", StringComparison.Ordinal) && l.Contains("16 MiB", StringComparison.Ordinal) && l.Contains("pid", StringComparison.Ordinal));
        Assert.Contains(up.Output.Split('\n'), l => l.Contains("hdd", StringComparison.Ordinal) && l.Contains("pid", StringComparison.Ordinal));
        if (OperatingSystem.IsLinux())
        {
            // The ssd and hdd nodes hold one (already unlinked) file each in the data directory; the dram node none.
            Assert.Equal(2, children.Count(pid => OpenFiles(pid).Any(f => f.StartsWith(data, StringComparison.Ordinal))));
        }

        Assert.Empty(Directory.GetFiles(data));

        // No byte quota: the job stores twice what it was sized for, to make the ssd tier spill (its quota would refuse that).
        var registered = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "flash", "--throughput", "1Gbps", "--capacity", "20MiB", "--latency-sensitive", "false", "--max-capacity", "0", "--json")).Json();
        Assert.Equal(0, registered["quota"]!["maxBytes"]!.GetValue<long>());
        Assert.Equal("ssd", registered["tier"]!.GetValue<string>());
        var jobId = registered["id"]!.GetValue<string>();

        // The controller started the second ssd node the job needed.
        var nodeTiers = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json()["nodes"]!.AsArray().Select(n => n!["tier"]!.GetValue<string>());
        Assert.Equal(new[] { "dram", "hdd", "ssd", "ssd" }, nodeTiers.Order());

        // 40 MiB: the two ssd nodes hold 32 MiB, the rest spills to hdd.
        var source = _home.File("big.bin");
        var bytes = new byte[40 << 20];
        Random.Shared.NextBytes(bytes);
        await File.WriteAllBytesAsync(source, bytes);
        await PocketProcess.RunOkAsync(_home.Path, "put", source, $"{jobId}/big");
        var copy = _home.File("big.out");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/big", copy);
        Assert.Equal(bytes, await File.ReadAllBytesAsync(copy));

        var state = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        using var http = new HttpClient { BaseAddress = new Uri(state["controller"]!.GetValue<string>()) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", state["clusterToken"]!.GetValue<string>());
        var info = JsonNode.Parse(await http.GetStringAsync($"/v1/jobs/{jobId}"))!;
        var byTier = info["usage"]!["bytesByTier"]!.AsObject();
        Assert.Equal(32L << 20, byTier["ssd"]!.GetValue<long>());
        Assert.Equal(8L << 20, byTier["hdd"]!.GetValue<long>());
        Assert.Equal(40L << 20, byTier.Sum(t => t.Value!.GetValue<long>()));

        var status = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json();
        var job = Assert.Single(status["jobs"]!.AsArray(), j => j!["id"]!.GetValue<string>() == jobId)!;
        Assert.Equal(8L << 20, job["bytesByTier"]!["hdd"]!.GetValue<long>());
        var table = await PocketProcess.RunOkAsync(_home.Path, "status");
        Assert.Contains("bytes per tier", table.Stdout, StringComparison.Ordinal);
        Assert.Contains("ssd 32 MiB, hdd 8 MiB", table.Stdout, StringComparison.Ordinal);

        // Every tier full (12 MiB left on dram and hdd): the put fails whole, and leaves nothing behind.
        var refused = await PocketProcess.RunAsync(_home.Path, "put", source, $"{jobId}/second");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("capacity exceeded", refused.Stderr, StringComparison.Ordinal);
        var after = JsonNode.Parse(await http.GetStringAsync($"/v1/jobs/{jobId}"))!["usage"]!;
        Assert.Equal(1, after["objects"]!.GetValue<long>());
        Assert.Equal(40L << 20, after["bytesByTier"]!.AsObject().Sum(t => t.Value!.GetValue<long>()));

        // Deleting returns the capacity on every tier.
        await PocketProcess.RunOkAsync(_home.Path, "rm", $"{jobId}/big");
        var emptied = JsonNode.Parse(await http.GetStringAsync($"/v1/jobs/{jobId}"))!["usage"]!["bytesByTier"]!.AsObject();
        Assert.All(emptied, t => Assert.Equal(0, t.Value!.GetValue<long>()));
        var nodes = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json()["nodes"]!.AsArray();
        Assert.All(nodes, n => Assert.Equal(0, n!["usedBytes"]!.GetValue<long>()));

        PocketProcess.Terminate(up.Pid);
        Assert.Equal(0, await up.WaitForExitAsync());
        await AssertGoneAsync(children);
        Assert.Empty(Directory.GetFiles(data));
    }

    [Fact]
    public async Task UpTakesNodeBandwidthAndCostPerTierAndSizingFollowsThePrice()
    {
        // By the paper's prices a small job goes to DRAM ($0.532/h a node against ssd's $0.624); priced at $5/h,
        // DRAM loses to ssd.
        await using var up = UpProcess.Start(
            _home.Path, "--port", "0", "--controller-port", "0", "--no-gateway", "--tiers", "dram=2,ssd=2",
            "--capacity", "8MiB", "--node-capacity", "ssd=16MiB", "--node-cost", "dram=$5", "--node-bandwidth", "dram=2Gbps",
            "--data-dir", Path.Combine(_home.Path, "priced"), "--for", "10m");
        var children = await ChildPidsAsync(up, expected: 4);
        Assert.Contains(up.Output.Split('\n'), l => l.StartsWith("node classes:", StringComparison.Ordinal) && l.Contains("dram 8 MiB, 2 Gb/s, $5/h", StringComparison.Ordinal) && l.Contains("ssd 16 MiB, 8 Gb/s, $0.624/h", StringComparison.Ordinal));

        var registered = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "priced", "--throughput", "1Gbps", "--capacity", "4MiB", "--latency-sensitive", "false", "--json")).Json();
        Assert.Equal("ssd", registered["tier"]!.GetValue<string>());

        PocketProcess.Terminate(up.Pid);
        Assert.Equal(0, await up.WaitForExitAsync());
        await AssertGoneAsync(children);
    }

    /// <summary>What a process has open (Linux), as the kernel names it (an unlinked file ends in " (deleted)").</summary>
    private static List<string> OpenFiles(int pid)
    {
        var files = new List<string>();
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target)
                {
                    files.Add(target);
                }
            }
            catch (IOException)
            {
                // Closed between the listing and the look-up.
            }
        }

        return files;
    }

    [Theory]
    [InlineData("--tiers dram=1,tape=1", "--tiers: unknown tier 'tape' (tiers: dram, ssd, hdd)")]
    [InlineData("--tiers ssd=-1", "ssd=-1 is negative")]
    [InlineData("--tiers dram=two", "'two' for dram is not a node count")]
    [InlineData("--tiers dram=1,dram=2", "dram is given twice")]
    [InlineData("--tiers dram=2 --nodes 2", "either --nodes")]
    [InlineData("--tiers ssd=1 --node-capacity ssd=lots", "'lots' for ssd is not a size")]
    [InlineData("--tiers ssd=1 --node-capacity ssd=1000TB", "not enough space in")]
    [InlineData("--tiers dram=1 --node-bandwidth dram=fast", "'fast' for dram is not a bandwidth")]
    [InlineData("--tiers dram=1 --node-cost dram=-1", "dram=-1 is negative")]
    [InlineData("--tiers dram=1 --node-cost hdd=0.1", "--node-cost names hdd, a tier this cluster does not have")]
    public async Task UpRefusesBadTierSpecsWithAClearError(string arguments, string expected)
    {
        var result = await PocketProcess.RunAsync(_home.Path, ["up", "--port", "0", "--controller-port", "0", "--no-gateway", "--for", "1s", "--data-dir", _home.File("d"), .. arguments.Split(' ')]);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(expected, result.Stderr, StringComparison.Ordinal);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(File.Exists(_home.File("cluster.json")));
    }

    /// <summary>The storage processes `pocket up` started, from the pids its node table prints.</summary>
    private static async Task<List<int>> ChildPidsAsync(UpProcess up, int expected, bool checkRunning = true)
    {
        var pids = new List<int>();
        await up.WaitForLineAsync(line =>
        {
            if (PidPattern().Match(line) is { Success: true } match)
            {
                pids.Add(int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            }

            return line.StartsWith("stopping by itself", StringComparison.Ordinal);
        });
        Assert.Equal(expected, pids.Count);
        if (checkRunning)
        {
            Assert.All(pids, pid => Assert.True(PocketProcess.IsRunning(pid), $"storage process {pid} is not running"));
        }

        return pids;
    }

    /// <summary>
    /// `pocket up` waits for its children before it exits, so they are gone by now; a short bounded grace covers the
    /// kernel's bookkeeping, not timing.
    /// </summary>
    private static async Task AssertGoneAsync(List<int> pids)
    {
        using var timeout = new CancellationTokenSource(PocketProcess.Timeout);
        while (pids.Any(PocketProcess.IsRunning) && !timeout.IsCancellationRequested)
        {
            await Task.Delay(50);
        }

        Assert.DoesNotContain(pids, PocketProcess.IsRunning);
    }

    [GeneratedRegex(@"\bpid (\d+)\b")]
    private static partial Regex PidPattern();
}
