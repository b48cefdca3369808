namespace Pocket.Cli.Tests;

/// <summary>`pocket simulate` as a user runs it: the shipped trace, the template it writes, overrides, bad traces.</summary>
public sealed class SimulateTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task SimulateRunsTheShippedTraceAndItsWrittenTemplateAlike()
    {
        var shipped = (await PocketProcess.RunOkAsync(_home.Path, "simulate", "--json")).Json();
        Assert.Equal("paper-three-jobs", shipped["trace"]!.GetValue<string>());
        var nodeSeconds = shipped["node_seconds"]!.GetValue<double>();
        var oracle = shipped["oracle_node_seconds"]!.GetValue<double>();
        Assert.InRange(nodeSeconds, oracle, 1.5 * oracle);
        Assert.True(shipped["short_seconds"]!.GetValue<int>() >= 0);
        Assert.Contains(shipped["events"]!.AsArray(), e => e!["kind"]!.GetValue<string>() == "scale-up");
        Assert.Equal(shipped["seconds"]!.GetValue<int>(), shipped["timeline"]!.AsArray().Count);

        var template = _home.File("trace.json");
        await PocketProcess.RunOkAsync(_home.Path, "simulate", "--write-trace", template);
        var fromFile = (await PocketProcess.RunOkAsync(_home.Path, "simulate", "--trace", template, "--json")).Json();
        Assert.Equal(nodeSeconds, fromFile["node_seconds"]!.GetValue<double>());
        Assert.Equal(shipped["short_seconds"]!.GetValue<int>(), fromFile["short_seconds"]!.GetValue<int>());

        // A slower node start leaves jobs short for longer.
        var slow = (await PocketProcess.RunOkAsync(_home.Path, "simulate", "--json", "--start-delay", "125s", "--band", "50-70", "--max-nodes", "12")).Json();
        Assert.Equal(0.5, slow["settings"]!["lower"]!.GetValue<double>());
        Assert.Equal(12, slow["settings"]!["max_nodes"]!.GetValue<int>());
        Assert.True(slow["short_seconds"]!.GetValue<int>() > shipped["short_seconds"]!.GetValue<int>());
    }

    [Fact]
    public async Task SimulatePrintsASummaryAndATimeline()
    {
        var result = await PocketProcess.RunOkAsync(_home.Path, "simulate", "--step", "30s");

        foreach (var text in new[] { "timeline", "events", "summary", "node-seconds provisioned", "node-seconds needed (oracle)", "short of throughput", "scale-up" })
        {
            Assert.Contains(text, result.Stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task SimulateRefusesBadTracesAndOptionsWithOneLine()
    {
        var missing = await PocketProcess.RunAsync(_home.Path, "simulate", "--trace", _home.File("nope.json"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("not found", missing.Stderr, StringComparison.Ordinal);

        var broken = _home.File("broken.json");
        await File.WriteAllTextAsync(broken, "{\n  \"jobs\": [\n    { \"name\": \"a\", \"start\": 0,, }\n  ]\n}\n");
        var badJson = await PocketProcess.RunAsync(_home.Path, "simulate", "--trace", broken);
        Assert.Equal(1, badJson.ExitCode);
        Assert.Contains("line 3", badJson.Stderr, StringComparison.Ordinal);

        var negative = _home.File("negative.json");
        await File.WriteAllTextAsync(negative, "{ \"jobs\": [ { \"name\": \"a\", \"profile\": [ { \"at\": 0, \"throughput\": -8000 }, { \"at\": 10 } ] } ] }");
        var badValue = await PocketProcess.RunAsync(_home.Path, "simulate", "--trace", negative);
        Assert.Equal(1, badValue.ExitCode);
        Assert.Contains("profile[0].throughput", badValue.Stderr, StringComparison.Ordinal);
        Assert.Contains("negative", badValue.Stderr, StringComparison.Ordinal);

        var band = await PocketProcess.RunAsync(_home.Path, "simulate", "--band", "80-60");
        Assert.Equal(1, band.ExitCode);
        Assert.Contains("--band", band.Stderr, StringComparison.Ordinal);

        var pool = await PocketProcess.RunAsync(_home.Path, "simulate", "--warm-pool", "65");
        Assert.Equal(1, pool.ExitCode);
        Assert.Contains("--warm-pool must be between 0 and 64", pool.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SimulateWithAWarmPoolPaysForItAndIsShortForLess()
    {
        // Without hints (the registrations would add the nodes before the load shows, leaving nothing short to shorten).
        var cold = (await PocketProcess.RunOkAsync(_home.Path, "simulate", "--json", "--no-hints")).Json();
        var warm = (await PocketProcess.RunOkAsync(_home.Path, "simulate", "--json", "--warm-pool", "1", "--no-hints")).Json();

        Assert.Equal(1, warm["settings"]!["warm_pool"]!.GetValue<int>());
        Assert.Equal(0, warm["settings"]!["jobs_declaring_hints"]!.GetValue<int>());
        Assert.True(warm["node_seconds"]!.GetValue<double>() > cold["node_seconds"]!.GetValue<double>());
        Assert.True(warm["short_seconds"]!.GetValue<int>() < cold["short_seconds"]!.GetValue<int>());
        Assert.All(warm["timeline"]!.AsArray(), s => Assert.InRange(s!["standby"]!.GetValue<int>(), 0, 1));
        Assert.Contains(warm["events"]!.AsArray(), e => e!["reason"]!.GetValue<string>().Contains("warm pool", StringComparison.Ordinal));
    }
}
