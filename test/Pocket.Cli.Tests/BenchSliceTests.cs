using System.Text.RegularExpressions;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket bench --slices K`: each system's timed run is split into K slices taken in turn with the other systems'
/// (the first system rotating each slice), each later slice after a short warm-up, and each system's slices are
/// reported as one result; bad combinations are refused with one clear line.
/// </summary>
public sealed partial class BenchSliceTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task SlicesTakeTheSystemsInTurnInWorkerProcessesAndAddUpToOneResultEach()
    {
        // test.sh installs redis-server.
        await using var redis = await RedisProcess.StartAsync();

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "4", "--processes", "2", "--op", "get", "--duration", "1500ms", "--slices", "3",
            "--warmup", "1s", "--size", "1KiB", "--node-capacity", "64MiB", "--vs", $"redis=resp://127.0.0.1:{redis.Port}", "--json");

        // Slice k starts with system k: pocket, redis; then redis, pocket; then pocket, redis.
        Assert.Equal(
            ["pocket 1", "redis 1", "redis 2", "pocket 2", "pocket 3", "redis 3"],
            Measured(result.Stderr, "get", 3));

        // Each system's first slice follows its whole warm-up, every later one at most half a second.
        Assert.Contains("pocket get: slice 1 of 3, warm-up 1s in 2 processes", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("redis get: slice 3 of 3, warm-up 500ms in 2 processes", result.Stderr, StringComparison.Ordinal);

        var report = result.Json();
        Assert.Equal(3, report["config"]!["slices"]!.GetValue<int>());
        Assert.Equal(1.5, report["config"]!["duration_s"]!.GetValue<double>());
        foreach (var system in new[] { "pocket", "redis" })
        {
            var get = report["systems"]![system]!["get"]!;

            // Three slices of 0.5 s each, their histograms added: every request of every slice is a sample.
            var ops = get["ops"]!.GetValue<long>();
            Assert.True(ops > 0, get.ToString());
            Assert.Equal(ops, get["samples"]!.GetValue<long>());
            Assert.InRange(get["seconds"]!.GetValue<double>(), 1.45, 15);
            Assert.True(get["client_ops"]!["min"]!.GetValue<long>() >= 3, get.ToString());
        }

        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    [Fact]
    public async Task SlicesOfPutsAndLookupsInTheBenchProcessLeaveNoKeysBehind()
    {
        await using var redis = await RedisProcess.StartAsync();

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--clients", "2", "--op", "put,lookup", "--duration", "1s", "--slices", "2", "--warmup", "0s",
            "--size", "1KiB", "--node-capacity", "64MiB", "--vs", $"redis=resp://127.0.0.1:{redis.Port}", "--json");

        Assert.Equal(["pocket 1", "redis 1", "redis 2", "pocket 2"], Measured(result.Stderr, "put", 2));
        Assert.Equal(["pocket 1", "redis 1", "redis 2", "pocket 2"], Measured(result.Stderr, "lookup", 2));

        // Without a warm-up there is none before the later slices either.
        Assert.DoesNotContain("warm-up", result.Stderr, StringComparison.Ordinal);

        var report = result.Json();
        foreach (var system in new[] { "pocket", "redis" })
        {
            foreach (var op in new[] { "put", "lookup" })
            {
                var figures = report["systems"]![system]![op]!;
                Assert.True(figures["ops"]!.GetValue<long>() > 0, figures.ToString());
                Assert.Equal(figures["ops"]!.GetValue<long>(), figures["samples"]!.GetValue<long>());
            }
        }

        // Both slices' puts (each slice under its own prefix) and the lookups' objects are gone again.
        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    [Theory]
    [InlineData("--slices 0", "--slices must be between 1 and 100")]
    [InlineData("--slices 101", "--slices must be between 1 and 100")]
    [InlineData("--slices 2 --ops 100", "give --duration, not --ops")]
    [InlineData("--slices 20 --duration 5s", "a slice needs at least 500ms")]
    public async Task SlicesThatCannotBeRunAreRefusedWithOneLine(string arguments, string message)
    {
        var result = await PocketProcess.RunAsync(_home.Path, ["bench", .. arguments.Split(' ')]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AShortRunWithoutSlicesIsNotHeldToTheSliceMinimum()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--in-process", "--duration", "300ms", "--warmup", "0s", "--op", "put", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        Assert.Equal(1, report["config"]!["slices"]!.GetValue<int>());
        Assert.True(report["systems"]!["pocket"]!["put"]!["ops"]!.GetValue<long>() > 0, report.ToString());
    }

    /// <summary>"system slice" for each timed slice of <paramref name="op"/>, in the order the bench ran them.</summary>
    private static string[] Measured(string stderr, string op, int slices) =>
        [.. MeasuringLine().Matches(stderr)
            .Where(m => m.Groups["op"].Value == op && m.Groups["of"].Value == slices.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .Select(m => $"{m.Groups["system"].Value} {m.Groups["slice"].Value}")];

    [GeneratedRegex(@"(?<system>\w+) (?<op>\w+): slice (?<slice>\d+) of (?<of>\d+), measuring")]
    private static partial Regex MeasuringLine();
}
