using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket metadata` and `pocket storage` with --tls-cert, a self-signed certificate made here: a client that trusts
/// it stores and reads data over TLS, one that does not is refused, and unusable certificate files are named.
/// </summary>
public sealed class TlsRoleTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task RolesServeOverTLSWithASelfSignedCertificate()
    {
        var (certAndKey, caOnly, _) = WriteCertificates();
        var token = JobToken.NewRandom();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = token.ToString() };

        await using var metadata = UpProcess.StartCommand(_home.Path, environment, "metadata", "--port", "0", "--tls-cert", certAndKey, "--tls-ca", caOnly, "--tls-name", "localhost", "--stop-on-stdin-eof");
        var (ready, address) = await metadata.WaitForReadyAsync("POCKET-METADATA ");
        Assert.EndsWith(" tls", ready, StringComparison.Ordinal);

        await using var storage = UpProcess.StartCommand(
            _home.Path, environment, "storage", "--metadata", address, "--capacity", "64MiB", "--port", "0",
            "--tls-cert", certAndKey, "--tls-ca", caOnly, "--tls-name", "localhost", "--stop-on-stdin-eof");
        await storage.WaitForLineAsync(line => line.StartsWith("POCKET-NODE ", StringComparison.Ordinal));

        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        var trusting = new PocketClientOptions
        {
            TlsHost = "localhost",
            CertificateValidation = TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(caOnly)),
        };
        await using (var client = await PocketClient.ConnectAsync(address, trusting, cts.Token))
        {
            Assert.Single(await client.Admin(token).GetNodesAsync(cts.Token));
            var job = await client.Admin(token).RegisterJobAsync("tls", cts.Token);

            // Large enough for blocks: the bytes go to the storage node over TLS too.
            var data = new byte[(2 << 20) + 123];
            Random.Shared.NextBytes(data);
            await job.PutAsync("object", data, cancellationToken: cts.Token);
            Assert.Equal(data, await job.GetAsync("object", cancellationToken: cts.Token));
            Assert.NotEmpty((await job.LookupAsync("object", cts.Token))!.Blocks);
        }

        // Plain TCP, a TLS client that trusts only the system's roots, and one that expects another name all fail.
        foreach (var options in new[]
        {
            new PocketClientOptions(),
            new PocketClientOptions { TlsHost = "localhost" },
            trusting with { TlsHost = "pocket.example" },
        })
        {
            await Assert.ThrowsAnyAsync<Exception>(async () =>
            {
                await using var client = await PocketClient.ConnectAsync(address, options, cts.Token);
                await client.Admin(token).GetNodesAsync(cts.Token);
            });
        }
    }

    [Fact]
    public async Task MetricsOfTlsRolesAreServedOverHttpsWithTheRolesCertificateOnly()
    {
        var (certAndKey, caOnly, _) = WriteCertificates();
        var token = JobToken.NewRandom();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = token.ToString() };
        string[] tls = ["--tls-cert", certAndKey, "--tls-ca", caOnly, "--tls-name", "localhost", "--stop-on-stdin-eof"];

        await using var metadata = UpProcess.StartCommand(_home.Path, environment, ["metadata", "--port", "0", "--metrics-port", "0", .. tls]);
        var (metadataReady, address) = await metadata.WaitForReadyAsync("POCKET-METADATA ");
        await using var storage = UpProcess.StartCommand(_home.Path, environment, ["storage", "--metadata", address, "--capacity", "64MiB", "--port", "0", "--metrics-port", "0", .. tls]);
        var storageReady = await storage.WaitForLineAsync(line => line.StartsWith("POCKET-NODE ", StringComparison.Ordinal));

        var validation = TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(caOnly));
        foreach (var (ready, family) in new[] { (metadataReady, "pocket_metadata_requests_total"), (storageReady, "pocket_storage_requests_total") })
        {
            // The ready line names the metrics URL: HTTPS, because the role serves TLS.
            var url = RoleCommandLine.MetricsUrl(ready) ?? throw new Xunit.Sdk.XunitException($"no metrics URL in '{ready}'");
            Assert.Equal("https", url.Scheme);

            // Trusting the CA (Prometheus: tls_config.ca_file), with the token: the metrics.
            using (var trusting = new HttpClient(new SocketsHttpHandler { SslOptions = { RemoteCertificateValidationCallback = validation } }))
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, url);
                request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token.ToString());
                using var response = await trusting.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Contains(family, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            // Plain HTTP to the same port, or HTTPS that does not trust the certificate: nothing.
            using var plain = new HttpClient();
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync(new UriBuilder(url) { Scheme = "http" }.Uri));
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync(url));
        }
    }

    [Fact]
    public async Task UnusableCertificateFilesAreNamed()
    {
        var (certAndKey, caOnly, otherKey) = WriteCertificates();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = JobToken.NewRandom().ToString() };
        var missing = Path.Combine(_home.Path, "missing.pem");
        var garbage = Path.Combine(_home.Path, "garbage.pfx");
        await File.WriteAllBytesAsync(garbage, [1, 2, 3, 4]);
        var cases = new (string[] Arguments, string Expected)[]
        {
            (["metadata", "--port", "0", "--tls-cert", missing], $"cannot read TLS certificate file '{missing}'"),
            (["metadata", "--port", "0", "--tls-cert", caOnly], $"TLS certificate '{caOnly}' cannot be used"),
            (["metadata", "--port", "0", "--tls-cert", caOnly, "--tls-key", otherKey], "cannot be used"),
            (["metadata", "--port", "0", "--tls-cert", garbage], $"TLS certificate '{garbage}' cannot be used"),
            (["metadata", "--port", "0", "--tls-key", otherKey], "--tls-key needs --tls-cert"),
            (["storage", "--metadata", "127.0.0.1:1", "--tls-cert", certAndKey, "--tls-ca", missing], $"cannot read TLS CA file '{missing}'"),
            (["controller", "--metadata", "127.0.0.1:1", "--tls-ca", caOnly], "--provisioner local with TLS gives the storage nodes the controller's certificate: add --tls-cert"),
            (["controller", "--metadata", "127.0.0.1:1", "--tls-ca", caOnly, "--tls-cert", certAndKey, "--provisioner", "kubernetes"], "--provisioner kubernetes starts storage pods without TLS"),
        };
        foreach (var (arguments, expected) in cases)
        {
            var result = await PocketProcess.RunAsync(_home.Path, environment, arguments);
            Assert.True(result.ExitCode == 1, $"pocket {string.Join(' ', arguments)}: {result}");
            Assert.Contains(expected, result.Stderr, StringComparison.Ordinal);
        }
    }

    /// <summary>A self-signed certificate for localhost and 127.0.0.1: PEM with its key, PEM without, and an unrelated key.</summary>
    private (string CertAndKey, string CaOnly, string OtherKey) WriteCertificates()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=pocket-test", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, 0, critical: true));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);

        var certAndKey = Path.Combine(_home.Path, "server.pem");
        var caOnly = Path.Combine(_home.Path, "ca.pem");
        var otherKey = Path.Combine(_home.Path, "other.key");
        File.WriteAllText(certAndKey, certificate.ExportCertificatePem() + "\n" + key.ExportPkcs8PrivateKeyPem() + "\n");
        File.WriteAllText(caOnly, certificate.ExportCertificatePem() + "\n");
        File.WriteAllText(otherKey, other.ExportPkcs8PrivateKeyPem() + "\n");
        return (certAndKey, caOnly, otherKey);
    }
}
