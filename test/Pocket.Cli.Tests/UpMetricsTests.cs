using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket up` and metrics: it prints the dashboard's URL and the metadata server's metrics URL, starts its storage
/// children with a metrics listener each, and keeps every /metrics URL in metrics-targets.json (Prometheus file-based
/// service discovery) as nodes come and go.
/// </summary>
public sealed class UpMetricsTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task UpPrintsTheDashboardAndListsTheMetricsOfEveryRoleAsNodesAreAdded()
    {
        // One node at start; the warm pool's standby node is started by the controller afterwards.
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--metrics-port", "0", "--nodes", "1", "--capacity", "64MiB", "--warm-pool", "1", "--for", "10m");
        var dashboard = await up.WaitForLineAsync(line => line.StartsWith("dashboard:", StringComparison.Ordinal));
        var metricsLine = await up.WaitForLineAsync(line => line.StartsWith("metrics:", StringComparison.Ordinal));

        // The host's budget for new nodes, as the provisioner checks it before each start.
        var host = await up.WaitForLineAsync(line => line.StartsWith("host:", StringComparison.Ordinal));
        Assert.Matches(@"^host: +memory [0-9.]+ [KMGT]?i?B left for new nodes \([0-9.]+ [KMGT]?i?B available, .* promised to running nodes, .* kept for the host\); disk ", host);
        await up.WaitForLineAsync(line => line.StartsWith("state file:", StringComparison.Ordinal));

        var cluster = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        var controller = cluster["controller"]!.GetValue<string>();
        var token = cluster["clusterToken"]!.GetValue<string>();
        Assert.EndsWith($"{controller}/#token={token}", dashboard.TrimEnd(), StringComparison.Ordinal);
        Assert.Contains("http://127.0.0.1:", metricsLine, StringComparison.Ordinal);

        using var http = new HttpClient();
        using (var page = await http.GetAsync(controller + "/"))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        }

        using (var request = new HttpRequestMessage(HttpMethod.Get, controller + "/v1/cluster"))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            using var response = await http.SendAsync(request);
            var budget = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["host"]!;
            Assert.True(budget["memoryAvailableBytes"]!.GetValue<long>() > 0, budget.ToJsonString());
            Assert.True(budget["memoryLeftBytes"]!.GetValue<long>() < budget["memoryAvailableBytes"]!.GetValue<long>(), budget.ToJsonString());
        }

        // The targets file follows the controller: the standby node joins it without a restart.
        JsonArray targets = [];
        var deadline = DateTime.UtcNow + PocketProcess.Timeout;
        while (Roles(targets).Count(r => r == "storage") < 2)
        {
            Assert.True(DateTime.UtcNow < deadline, $"metrics-targets.json never listed 2 storage nodes: {targets.ToJsonString()}\n{up.Output}");
            await Task.Delay(200);
            targets = ReadTargets();
        }

        Assert.Equal(["controller", "gateway", "metadata", "storage", "storage"], Roles(targets).Order(StringComparer.Ordinal));
        foreach (var group in targets)
        {
            var labels = group!["labels"]!;
            var url = new Uri($"{labels["__scheme__"]!.GetValue<string>()}://{Assert.Single(group["targets"]!.AsArray())!.GetValue<string>()}{labels["__metrics_path__"]!.GetValue<string>()}");
            var role = labels["role"]!.GetValue<string>();
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            using var response = await http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{role} {url}: {(int)response.StatusCode} {text}");
            Assert.Contains($"# TYPE pocket_{role}_", text, StringComparison.Ordinal);
            if (role == "storage")
            {
                Assert.Contains($"pocket_storage_capacity_bytes {64 << 20}", text, StringComparison.Ordinal);
            }
        }

        PocketProcess.Terminate(up.Pid);
        Assert.Equal(0, await up.WaitForExitAsync());
        Assert.False(File.Exists(_home.File("metrics-targets.json")), "metrics-targets.json outlived the cluster");
    }

    [Fact]
    public async Task UpWithoutMetricsListsOnlyTheControllerAndTheGateway()
    {
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--no-metrics", "--nodes", "1", "--capacity", "64MiB", "--for", "10m");
        var metricsLine = await up.WaitForLineAsync(line => line.StartsWith("metrics:", StringComparison.Ordinal));
        Assert.Contains("--no-metrics", metricsLine, StringComparison.Ordinal);
        await up.WaitForLineAsync(line => line.StartsWith("state file:", StringComparison.Ordinal));
        Assert.Equal(["controller", "gateway"], Roles(ReadTargets()).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task UpSaysWhichOptionToChangeWhenTheMetricsPortIsTaken()
    {
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var result = await PocketProcess.RunAsync(_home.Path, "up", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--metrics-port", port, "--nodes", "0", "--for", "1s");
        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Contains($"the metrics listener cannot listen on 127.0.0.1:{port}", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("choose another with --metrics-port", result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(_home.File("cluster.json")), "a cluster that did not start left cluster.json");
    }

    private JsonArray ReadTargets()
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(_home.File("metrics-targets.json")))!.AsArray();
        }
        catch (FileNotFoundException)
        {
            return [];
        }
    }

    private static IEnumerable<string> Roles(JsonArray targets) => targets.Select(t => t!["labels"]!["role"]!.GetValue<string>());
}
