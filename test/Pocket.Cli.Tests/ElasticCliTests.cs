using System.Text.Json.Nodes;

namespace Pocket.Cli.Tests;

/// <summary>`pocket bench elastic` end to end, and the warm pool and events as `pocket up` and `pocket status` show them.</summary>
public sealed class ElasticCliTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task BenchElasticScalesUpColdAndWarmDrainsAndVerifiesEveryObject()
    {
        var report = (await PocketProcess.RunOkAsync(_home.Path, "bench", "elastic", "--in-process", "--bytes", "8MiB", "--warm-pool", "1", "--json")).Json();

        Assert.True(report["scale_up_seconds"]!.GetValue<double>() > 0, report.ToJsonString());
        Assert.True(report["scale_up_warm_seconds"]!.GetValue<double>() > 0, report.ToJsonString());
        Assert.True(report["drain_seconds"]!.GetValue<double>() > 0, report.ToJsonString());
        Assert.True(report["drained_bytes"]!.GetValue<long>() > 0, report.ToJsonString());
        Assert.Equal(8, report["objects"]!.GetValue<int>());
        Assert.Equal(8, report["objects_verified"]!.GetValue<int>());
        Assert.Equal(8L << 20, report["loaded_bytes"]!.GetValue<long>());
        Assert.NotEqual(report["cold_node"]!.GetValue<uint>(), report["warm_node"]!.GetValue<uint>());
    }

    [Fact]
    public async Task BenchElasticRefusesBadOptions()
    {
        var result = await PocketProcess.RunAsync(_home.Path, "bench", "elastic", "--warm-pool", "-1");
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("--warm-pool", result.Stderr + result.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpWithAWarmPoolShowsTheStandbyNodeAndItsEventInStatus()
    {
        await using var up = UpProcess.Start(_home.Path, "--in-process", "--port", "0", "--controller-port", "0", "--nodes", "2", "--capacity", "64MiB", "--warm-pool", "1", "--no-gateway", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));

        JsonNode status = null!;
        var deadline = DateTime.UtcNow + PocketProcess.Timeout;
        do
        {
            status = (await PocketProcess.RunOkAsync(_home.Path, "status", "--json")).Json();
        }
        while (!status["events"]!.AsArray().Any(e => e!["kind"]!.GetValue<string>() == "pool-added") && DateTime.UtcNow < deadline);

        var added = status["events"]!.AsArray().First(e => e!["kind"]!.GetValue<string>() == "pool-added")!;
        var standby = added["node"]!.GetValue<uint>();
        Assert.Contains("standing by", added["reason"]!.GetValue<string>(), StringComparison.Ordinal);
        var node = Assert.Single(status["nodes"]!.AsArray(), n => n!["id"]!.GetValue<uint>() == standby)!;
        Assert.Equal("standby", node["state"]!.GetValue<string>());
        Assert.Equal(0, node["usedBytes"]!.GetValue<long>());
        Assert.Equal(2, status["nodes"]!.AsArray().Count(n => n!["state"]!.GetValue<string>() == "live"));

        // The table view has the events section with the same event.
        var table = await PocketProcess.RunOkAsync(_home.Path, "status");
        Assert.Contains("recent events", table.Stdout, StringComparison.Ordinal);
        Assert.Contains("pool-added", table.Stdout, StringComparison.Ordinal);
    }
}
