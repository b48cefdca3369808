using System.Text.Json.Nodes;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket up --tls`: every listener serves TLS with a self-signed set made under the cluster's home, the child storage
/// nodes included; the client verbs trust it through cluster.json, and a plain-HTTP client of the controller is refused.
/// </summary>
public sealed class UpTlsTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task UpWithTlsServesEveryListenerOverTLSAndTheVerbsTrustIt()
    {
        await using var up = UpProcess.Start(_home.Path, "--tls", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "2", "--capacity", "64MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var cluster = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        var controller = cluster["controller"]!.GetValue<string>();
        var gateway = cluster["gateway"]!.GetValue<string>();
        var ca = cluster["tlsCa"]!.GetValue<string>();
        Assert.StartsWith("https://127.0.0.1:", controller, StringComparison.Ordinal);
        Assert.StartsWith("https://127.0.0.1:", gateway, StringComparison.Ordinal);
        Assert.Equal(_home.File(Path.Combine("tls", "ca.pem")), ca);
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_home.File(Path.Combine("tls", "cert.pem"))));
        }

        // The verbs find the controller and its trust in cluster.json; the data goes over TLS to the child nodes.
        var jobId = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "tls", "--capacity", "32MiB", "--json")).Json()["id"]!.GetValue<string>();
        var data = new byte[(2 << 20) + 77];
        Random.Shared.NextBytes(data);
        await File.WriteAllBytesAsync(_home.File("in.bin"), data);
        await PocketProcess.RunOkAsync(_home.Path, "put", _home.File("in.bin"), $"{jobId}/object");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/object", _home.File("out.bin"));
        Assert.Equal(data, await File.ReadAllBytesAsync(_home.File("out.bin")));
        Assert.NotEmpty((await PocketProcess.RunOkAsync(_home.Path, "stat", $"{jobId}/object", "--json")).Json()["blocks"]!.AsArray());

        var token = JobToken.TryParse(cluster["clusterToken"]!.GetValue<string>(), out var parsed) ? parsed : throw new InvalidOperationException("no token");
        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var trust = TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(ca));
        using (var trusting = new PocketControllerClient(new Uri(controller), new PocketControllerClientOptions { ClusterToken = token, CertificateValidation = trust }))
        {
            Assert.Contains(await trusting.ListJobsAsync(cts.Token), j => j.JobId == jobId);
        }

        // Without the CA the certificate is refused; a plain-HTTP client gets no answer from the API.
        using (var untrusting = new PocketControllerClient(new Uri(controller), new PocketControllerClientOptions { ClusterToken = token }))
        {
            var refused = await Assert.ThrowsAsync<PocketControllerException>(() => untrusting.ListJobsAsync(cts.Token));
            Assert.Null(refused.HttpStatus);
        }

        using (var plain = new HttpClient { Timeout = TimeSpan.FromSeconds(60) })
        {
            var url = new UriBuilder(controller) { Scheme = "http" }.Uri;
            try
            {
                using var response = await plain.GetAsync(new Uri(url, "/v1/jobs"), cts.Token);
                Assert.False(response.IsSuccessStatusCode, $"plain HTTP got {(int)response.StatusCode}");
            }
            catch (HttpRequestException)
            {
                // Closed without an answer: refused too.
            }
        }

        // The metadata server refuses plain TCP as well.
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var client = await PocketClient.ConnectAsync(cluster["metadata"]!.GetValue<string>(), new PocketClientOptions(), cts.Token);
            await client.Admin(token).GetNodesAsync(cts.Token);
        });

        // The gateway answers over TLS (an unsigned request is refused by S3 rules, not by the handshake).
        using var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = trust;
        using (var s3 = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(60) })
        {
            using var response = await s3.GetAsync(new Uri(gateway + "/"), cts.Token);
            Assert.Equal(System.Net.HttpStatusCode.Forbidden, response.StatusCode);
        }

        await PocketProcess.RunOkAsync(_home.Path, "job", "rm", jobId);
    }

    [Fact]
    public async Task ADrainInATlsClusterCopiesEveryByteNodeToNodeOverTls()
    {
        // CopyExtent: the drain's target connects to the victim (PeerConnection) with the same TLS as every other
        // connection of the cluster. A copy that cannot connect fails the drain, it does not fall back.
        await using var up = UpProcess.Start(_home.Path, "--tls", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "2", "--capacity", "64MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var cluster = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        var token = JobToken.TryParse(cluster["clusterToken"]!.GetValue<string>(), out var parsed) ? parsed : throw new InvalidOperationException("no token");
        var options = new PocketClientOptions
        {
            TlsHost = "localhost",
            CertificateValidation = TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(cluster["tlsCa"]!.GetValue<string>())),
        };
        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        await using var client = await PocketClient.ConnectAsync(cluster["metadata"]!.GetValue<string>(), options, cts.Token);
        var admin = client.Admin(token);
        var job = await admin.RegisterJobAsync("drained-over-tls", cts.Token);

        var hashes = new Dictionary<string, string>();
        for (var i = 0; i < 12; i++)
        {
            var data = new byte[(1 << 20) + (i * 70_001)];
            Random.Shared.NextBytes(data);
            var key = $"object/{i}";
            await job.PutAsync(key, data, cancellationToken: cts.Token);
            hashes[key] = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(data));
        }

        var victim = (await admin.GetNodesAsync(cts.Token)).Where(n => n.State == NodeState.Live).MaxBy(n => n.Used)!;
        Assert.True(victim.Used > 0, "the objects are on a node");
        await admin.DrainNodeAsync(victim.Id, cts.Token);
        NodeInfo? drained;
        using (var calls = new CancellationTokenSource(PocketProcess.Timeout * 2))
        {
            while ((drained = (await admin.GetNodesAsync(calls.Token)).SingleOrDefault(n => n.Id == victim.Id)) is { State: not NodeState.Drained })
            {
                Assert.NotEqual(NodeState.Dead, drained.State);
                Assert.False(cts.IsCancellationRequested, $"the drain did not end (a copy that cannot reach its source retries): {drained}");
                await Task.Delay(50, calls.Token);
            }
        }

        // Drained (or already stopped by the controller once drained): nothing of the job is left on it, and what moved
        // is what it held (its use counts whole 64 KiB blocks, the moved bytes the objects' own: at most a block apart each).
        Assert.True(drained is null || drained is { Used: 0 } && drained.MovedBytes > victim.Used - (hashes.Count * (64 << 10)), $"victim before {victim}, after {drained}");
        foreach (var (key, hash) in hashes)
        {
            var info = (await job.LookupAsync(key, cts.Token))!;
            Assert.DoesNotContain(info.Blocks, b => b.NodeId == victim.Id);
            Assert.Equal(hash, Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(await job.GetAsync(key, cancellationToken: cts.Token))));
        }
    }

    [Fact]
    public async Task VerbsElsewhereTrustTheSelfSignedClusterThroughTlsCaAndRefuseItWithout()
    {
        await using var up = UpProcess.Start(_home.Path, "--tls", "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--nodes", "1", "--capacity", "64MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));
        var cluster = JsonNode.Parse(await File.ReadAllTextAsync(_home.File("cluster.json")))!;
        var controller = cluster["controller"]!.GetValue<string>();
        var metadata = cluster["metadata"]!.GetValue<string>();

        // Another machine's view: no cluster.json, the token in the environment, a copy of the CA passed as an option.
        using var elsewhere = new TempHome();
        var ca = elsewhere.File("cluster-ca.pem");
        File.Copy(cluster["tlsCa"]!.GetValue<string>(), ca);
        var token = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = cluster["clusterToken"]!.GetValue<string>() };

        var registered = await RunAsync("job", "register", "trusted", "--capacity", "32MiB", "--json", "--controller", controller, "--tls-ca", ca);
        Assert.True(registered.ExitCode == 0, registered.ToString());
        var jobId = registered.Json()["id"]!.GetValue<string>();
        var data = new byte[(1 << 20) + 5];
        Random.Shared.NextBytes(data);
        await File.WriteAllBytesAsync(elsewhere.File("in.bin"), data);
        Assert.Equal(0, (await RunAsync("put", elsewhere.File("in.bin"), $"{jobId}/object", "--tls-ca", ca)).ExitCode);
        var got = await RunAsync("get", $"{jobId}/object", elsewhere.File("out.bin"), "--tls-ca", ca, "--tls-name", "localhost");
        Assert.True(got.ExitCode == 0, got.ToString());
        Assert.Equal(data, await File.ReadAllBytesAsync(elsewhere.File("out.bin")));
        Assert.Equal(0, (await RunAsync("status", "--controller", controller, "--tls-ca", ca)).ExitCode);

        // Without it the same verbs fail with one line each; a missing file or a certificate for another name too.
        var untrusted = await RunAsync("job", "ls", "--controller", controller);
        Assert.Equal(1, untrusted.ExitCode);
        Assert.StartsWith("error: ", untrusted.Stderr, StringComparison.Ordinal);
        var plain = await RunAsync("ls", $"{jobId}/", "--metadata", metadata);
        Assert.Equal(1, plain.ExitCode);
        Assert.StartsWith("error: ", plain.Stderr, StringComparison.Ordinal);
        var missing = elsewhere.File("missing.pem");
        var noFile = await RunAsync("ls", $"{jobId}/", "--tls-ca", missing);
        Assert.Equal(1, noFile.ExitCode);
        Assert.Contains($"(from --tls-ca)", noFile.Stderr, StringComparison.Ordinal);
        Assert.Contains(missing, noFile.Stderr, StringComparison.Ordinal);
        var wrongName = await RunAsync("ls", $"{jobId}/", "--tls-ca", ca, "--tls-name", "elsewhere.example");
        Assert.Equal(1, wrongName.ExitCode);
        Assert.StartsWith("error: ", wrongName.Stderr, StringComparison.Ordinal);

        Assert.Equal(0, (await RunAsync("job", "rm", jobId, "--controller", controller, "--tls-ca", ca)).ExitCode);

        Task<PocketResult> RunAsync(params string[] arguments) => PocketProcess.RunAsync(elsewhere.Path, token, arguments);
    }
}
