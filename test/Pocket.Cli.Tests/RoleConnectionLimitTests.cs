using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket metadata` given more connects than its open-file limit allows. A .NET process out of descriptors cannot
/// start a thread (the runtime aborts it, "Out of memory."), so connections never take the descriptors the process
/// keeps: a --max-connections above them is warned about at start, connects past them are closed as they come with a
/// log line, and the server lives on and serves new clients once connections close. Outgoing connections take from the
/// same budget.
/// </summary>
public sealed partial class RoleConnectionLimitTests : IDisposable
{
    private const int FileLimit = 256;
    private const int Connects = 300;

    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task ConnectsPastTheDescriptorsLeftAreClosedAndTheServerLivesOn()
    {
        var token = JobToken.NewRandom();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = token.ToString() };
        await using var metadata = UpProcess.StartCommandWithFileLimit(
            _home.Path, environment, FileLimit, "metadata", "--port", "0", "--max-connections", "100000", "--stop-on-stdin-eof");
        var (_, address) = await metadata.WaitForReadyAsync("POCKET-METADATA ");
        var warning = await metadata.WaitForErrorLineAsync(line => line.Contains("may accept 100000 connections", StringComparison.Ordinal));
        var budget = int.Parse(BudgetPattern().Match(warning).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.InRange(budget, 1, FileLimit - 64);

        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var endPoint = IPEndPoint.Parse(address);
        var sockets = new List<Socket>();
        try
        {
            // The kernel completes every connect (the backlog holds them); the server takes them and closes those past
            // its budget instead of running out of descriptors.
            await ConnectManyAsync(sockets, endPoint.Address.ToString(), endPoint.Port, Connects, cts.Token);

            var refused = await metadata.WaitForErrorLineAsync(line => line.Contains("refused a connection", StringComparison.Ordinal));
            Assert.Contains($"all {budget} descriptors", refused, StringComparison.Ordinal);

            // The last connect is past the budget: the server ends it.
            Assert.Equal(0, await sockets[^1].ReceiveAsync(new byte[16], SocketFlags.None, cts.Token));
            Assert.False(metadata.HasExited, metadata.Output);
        }
        finally
        {
            CloseAll(sockets);
        }

        // The closed connections give their descriptors back, and a new client is served.
        await using var client = await PocketClient.ConnectAsync(address, new PocketClientOptions(), cts.Token);
        Assert.Empty(await client.Admin(token).GetNodesAsync(cts.Token));
        Assert.False(metadata.HasExited, metadata.Output);
    }

    /// <summary>
    /// The metrics port takes connections outside the protocol's budget: a flood of them (held open, nothing sent) past the
    /// open-file limit must not take the descriptors the role keeps. It holds a few at once and closes the rest as they
    /// come; the data path serves on, and a scrape works once the flood ends.
    /// </summary>
    [Fact]
    public async Task AFloodOfConnectionsToTheMetricsPortLeavesTheRoleServing()
    {
        var token = JobToken.NewRandom();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = token.ToString() };
        await using var metadata = UpProcess.StartCommandWithFileLimit(
            _home.Path, environment, FileLimit, "metadata", "--port", "0", "--metrics-port", "0", "--stop-on-stdin-eof");
        var (ready, address) = await metadata.WaitForReadyAsync("POCKET-METADATA ");
        var metrics = RoleCommandLine.MetricsUrl(ready) ?? throw new Xunit.Sdk.XunitException($"no metrics URL in '{ready}'");

        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var flood = new List<Socket>();
        try
        {
            await ConnectManyAsync(flood, metrics.Host, metrics.Port, Connects, cts.Token);

            // Meanwhile the protocol port serves: a client connects, registers a job, puts and gets.
            await using var client = await PocketClient.ConnectAsync(address, new PocketClientOptions(), cts.Token);
            var job = await client.Admin(token).RegisterJobAsync("after-the-flood", cts.Token);
            var data = new byte[1024];
            Random.Shared.NextBytes(data);
            await job.PutAsync("a", data, cancellationToken: cts.Token);
            Assert.Equal(data, await job.GetAsync("a", cancellationToken: cts.Token));
            Assert.False(metadata.HasExited, metadata.Output);
        }
        finally
        {
            CloseAll(flood);
        }

        // The flood gone, a scrape is answered.
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, metrics);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token.ToString());
        using var response = await http.SendAsync(request, cts.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(metadata.HasExited, metadata.Output);
    }

    /// <summary>
    /// The S3 gateway's and the controller's HTTP connections take from the same budget as the frame servers': a flood
    /// of connects held open on the gateway of an in-process `pocket up` (every role in one process) waits in the
    /// kernel's backlog once the budget is spent, instead of taking the process's last descriptors, which aborted it
    /// (metadata, nodes, controller and gateway at once). Once the flood ends the cluster serves as before.
    /// </summary>
    [Fact]
    public async Task AFloodOfConnectionsToTheGatewayLeavesAnInProcessClusterRunning()
    {
        const int upFileLimit = 512;
        await using var up = UpProcess.StartCommandWithFileLimit(
            _home.Path, new Dictionary<string, string>(), upFileLimit,
            "up", "--in-process", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "1", "--capacity", "64MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var gateway = new Uri(System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!["gateway"]!.GetValue<string>());

        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var flood = new List<Socket>();
        try
        {
            await ConnectManyAsync(flood, gateway.Host, gateway.Port, upFileLimit, cts.Token);

            // The gateway stops accepting once the budget is spent: connects wait in its listen queue. (Unbounded, it
            // accepted until the process had no descriptor left, and the process aborted.)
            while (ListenQueue(gateway.Port) == 0)
            {
                Assert.False(up.HasExited, up.Output);
                await Task.Delay(50, cts.Token);
            }

            // ... while the process keeps descriptors for its threads and files (64, less what it opened since the last
            // server started); unbounded, the gateway's connections took them all.
            Assert.False(up.HasExited, up.Output);
            Assert.InRange(Directory.GetFiles($"/proc/{up.Pid}/fd").Length, 1, upFileLimit - 32);
        }
        finally
        {
            CloseAll(flood);
        }

        // The flood gone: the controller registers a job, the nodes store and serve it, the gateway answers.
        var jobId = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "after-the-flood", "--json")).Json()["id"]!.GetValue<string>();
        var data = new byte[100_000];
        Random.Shared.NextBytes(data);
        var source = _home.File("in.bin");
        var copy = _home.File("out.bin");
        await File.WriteAllBytesAsync(source, data, cts.Token);
        await PocketProcess.RunOkAsync(_home.Path, "put", source, $"{jobId}/object");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/object", copy);
        Assert.Equal(data, await File.ReadAllBytesAsync(copy, cts.Token));
        using var http = new HttpClient();
        using var response = await http.GetAsync(gateway, cts.Token);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.False(up.HasExited, up.Output);
    }

    /// <summary>
    /// A metrics listener holds at most <see cref="Pocket.Metrics.MetricsListener.MaxConnections"/> connections: the next
    /// connect waits in its listen queue, is served once one of them closes, and a stop with every slot held does not
    /// wait for them.
    /// </summary>
    [Fact]
    public async Task AMetricsListenerHoldsItsBoundServesTheNextWhenOneClosesAndStopsWithAllHeld()
    {
        var token = JobToken.NewRandom();
        var listener = await Pocket.Metrics.MetricsListener.StartAsync(
            new IPEndPoint(IPAddress.Loopback, 0), Prometheus.Metrics.NewCustomRegistry(), token, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var held = new List<Socket>();
        try
        {
            await ConnectManyAsync(held, listener.Url.Host, listener.Url.Port, Pocket.Metrics.MetricsListener.MaxConnections, cts.Token);

            // Once the listener took them all, a scrape's connect waits in the listen queue ...
            while (ListenQueue(listener.Url.Port) > 0)
            {
                await Task.Delay(50, cts.Token);
            }

            using var http = new HttpClient();
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(listener.Url, "/metrics"));
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token.ToString());
            var scrape = http.SendAsync(request, cts.Token);
            while (ListenQueue(listener.Url.Port) == 0)
            {
                Assert.False(scrape.IsCompleted, "a scrape was served with every slot held");
                await Task.Delay(50, cts.Token);
            }

            // ... and is answered once a held connection closes.
            held[0].Dispose();
            using var response = await scrape;
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);

            // Every slot held again and one more connect waiting: stopping does not wait for them.
            await ConnectManyAsync(held, listener.Url.Host, listener.Url.Port, 2, cts.Token);

            await listener.DisposeAsync().AsTask().WaitAsync(cts.Token);
        }
        finally
        {
            CloseAll(held);
        }
    }

    /// <summary>Opens <paramref name="count"/> connections to <paramref name="host"/>:<paramref name="port"/> into <paramref name="held"/>, which the caller closes (also when a connect fails).</summary>
    private static async Task ConnectManyAsync(List<Socket> held, string host, int port, int count, CancellationToken cancellationToken)
    {
        for (var i = 0; i < count; i++)
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            held.Add(socket);
            await socket.ConnectAsync(host, port, cancellationToken);
        }
    }

    private static void CloseAll(List<Socket> sockets)
    {
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }
    }

    /// <summary>Connects waiting to be accepted on this machine's IPv4 listener on <paramref name="port"/> (/proc/net/tcp's rx_queue of a listening socket).</summary>
    private static int ListenQueue(int port)
    {
        var local = string.Create(CultureInfo.InvariantCulture, $":{port:X4}");
        foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields[1].EndsWith(local, StringComparison.Ordinal) && fields[3] == "0A")
            {
                return int.Parse(fields[4].AsSpan(fields[4].IndexOf(':') + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    /// <summary>
    /// Outgoing connections take from the same budget: a bench (one client process, a connection per client) asked for
    /// more connections than its open-file limit holds opens those the budget allows, refuses the rest with a reason that
    /// names the limit, and runs on them. Without the budget it opened sockets until the process was out of descriptors,
    /// and then failed to load an assembly (or aborted). With worker processes (each under the same limit) the reason
    /// comes back from the workers too.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task OutgoingConnectsPastTheDescriptorsLeftFailWithAClearErrorAndTheProcessRunsOn(int processes)
    {
        var connects = Connects * processes;
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--nodes", "1", "--capacity", "64MiB", "--no-gateway", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var jobId = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "fan-in", "--json")).Json()["id"]!.GetValue<string>();

        var result = await PocketProcess.RunWithFileLimitAsync(
            _home.Path, FileLimit, "bench", "--job", jobId, "--connections", $"{connects}", "--processes", $"{processes}", "--ops", "600", "--warmup", "0s", "--size", "1KiB", "--op", "get", "--json");

        Assert.True(result.ExitCode == 0, result.ToString());
        var fanIn = result.Json()["fan_in"]!["pocket"]!;
        var opened = fanIn["connections"]!.GetValue<int>();
        var refused = fanIn["refused"]!.GetValue<int>();
        Assert.InRange(opened, 1, processes * (FileLimit - 64));
        Assert.Equal(connects, opened + refused);
        Assert.Equal(0, fanIn["failed"]!.GetValue<int>());
        var reason = $"descriptors its open-file limit ({FileLimit}) leaves them";
        Assert.Contains(reason, fanIn["refusal"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Contains(reason, result.Stderr, StringComparison.Ordinal);
        Assert.Equal(600, result.Json()["systems"]!["pocket"]!["get"]!["ops"]!.GetValue<long>());
        Assert.False(up.HasExited, up.Output);
    }


    [GeneratedRegex(@"leaves the process's accepted connections (\d+) descriptors")]
    private static partial Regex BudgetPattern();
}
