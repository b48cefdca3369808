namespace Pocket.Cli.Tests;

/// <summary>`pocket demo`, the README's first command, runs to a verified sort at a small size.</summary>
public sealed class DemoTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Theory]
    [InlineData("tasks", 4, 4)]
    [InlineData("processes", 3, 2)]
    [InlineData("python", 3, 2)]
    public async Task DemoSortsAndVerifiesOnAnEmbeddedCluster(string functionsAs, int mappers, int reducers)
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "demo", "--size", "8MiB", "--mappers", $"{mappers}", "--reducers", $"{reducers}", "--functions-as", functionsAs, "--json");

        var report = result.Json();
        Assert.True(report["verified"]!.GetValue<bool>(), result.ToString());
        const long Records = (8L << 20) / 100;
        Assert.Equal(Records, report["records"]!.GetValue<long>());
        Assert.Equal(functionsAs, report["functionsAs"]!.GetValue<string>());
        Assert.True(report["embedded"]!.GetValue<bool>());
        Assert.Equal("dram", report["tier"]!.GetValue<string>());
        Assert.True(report["nodes"]!.AsArray().Count >= 2, "a job is spread over at least two nodes");

        var phases = report["phases"]!.AsArray();
        Assert.Equal(["generate", "map", "reduce", "verify"], phases.Select(p => p!["name"]!.GetValue<string>()));
        Assert.All(phases, p => Assert.Equal(Records, p!["records"]!.GetValue<long>()));
        Assert.Equal(mappers, phases[1]!["functions"]!.GetValue<int>());
        Assert.Equal(reducers, phases[2]!["functions"]!.GetValue<int>());

        var checksum = report["checksum"]!;
        Assert.Equal(checksum["input"]!.ToJsonString(), checksum["output"]!.ToJsonString());

        // Deregistering freed every object: M inputs, M x R shuffle parts, R outputs.
        Assert.Equal(mappers + (mappers * reducers) + reducers, report["deregistered"]!["objectsFreed"]!.GetValue<long>());
    }

    [Fact]
    public async Task TwoSortsAtOnceOnTwoMetadataServersLandOnDifferentServersAndBothVerify()
    {
        var result = await PocketProcess.RunOkAsync(_home.Path, "demo", "--metadata", "2", "--jobs", "2", "--size", "4MiB", "--mappers", "3", "--reducers", "2", "--json");

        var report = result.Json();
        Assert.True(report["verified"]!.GetValue<bool>(), result.ToString());
        var jobs = report["jobs"]!.AsArray();
        Assert.Equal(2, jobs.Count);

        // Both jobs were registered before either sorted: the controller put the second on the server without a job.
        Assert.NotEqual(jobs[0]!["metadata"]!.GetValue<string>(), jobs[1]!["metadata"]!.GetValue<string>());
        Assert.NotEqual(jobs[0]!["job"]!.GetValue<string>(), jobs[1]!["job"]!.GetValue<string>());
        foreach (var job in jobs)
        {
            Assert.True(job!["verified"]!.GetValue<bool>(), job.ToJsonString());
            Assert.Equal((4L << 20) / 100, job["phases"]!.AsArray()[^1]!["records"]!.GetValue<long>());
            Assert.Equal(job["checksum"]!["input"]!.ToJsonString(), job["checksum"]!["output"]!.ToJsonString());
            Assert.Equal(3 + (3 * 2) + 2, job["deregistered"]!["objectsFreed"]!.GetValue<long>());
        }
    }

    [Fact]
    public async Task DemoPrintsASummaryWithoutJson()
    {
        var result = await PocketProcess.RunOkAsync(_home.Path, "demo", "--size", "1MiB", "--mappers", "2", "--reducers", "2");

        Assert.Contains("verified", result.Stdout, StringComparison.Ordinal);
        Assert.Contains("deregistered sort-1", result.Stdout, StringComparison.Ordinal);
        foreach (var phase in new[] { "generate", "map", "reduce", "verify" })
        {
            Assert.Contains(phase, result.Stdout, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// The README's first command as it stands, at its defaults (256 MiB, 8 mappers and 8 reducers): the smaller sorts
    /// above never asked a node for as much at once as eight 32 MiB map inputs do, which is where it once failed.
    /// </summary>
    [Fact]
    public async Task TheReadmeDemoRunsAtItsDefaults()
    {
        var result = await PocketProcess.RunOkAsync(_home.Path, "demo");

        Assert.Contains("verified: the output is sorted and holds exactly the input's records", result.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DemoRejectsBadOptionsWithOneLine()
    {
        var result = await PocketProcess.RunAsync(_home.Path, "demo", "--functions-as", "threads");

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("threads", result.Stderr, StringComparison.Ordinal);
    }
}
