using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// <see cref="KubernetesProvisioner.Create"/> as a controller outside the cluster uses it: a kubeconfig names the
/// API server, the credentials and the namespace. The kubeconfig points at the recording server.
/// </summary>
public sealed class KubeconfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pocket-kubeconfig-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string WriteKubeconfig(string server, string? @namespace)
    {
        var path = Path.Combine(_dir, "config");
        var namespaceLine = @namespace is null ? string.Empty : $"\n    namespace: {@namespace}";
        File.WriteAllText(path, $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: test
              cluster:
                server: {server}
            users:
            - name: pocket-controller
              user:
                token: test-bearer-token
            contexts:
            - name: test
              context:
                cluster: test
                user: pocket-controller{namespaceLine}
            current-context: test
            """);
        return path;
    }

    private static KubernetesProvisionerOptions Options(string? @namespace) => new()
    {
        Namespace = @namespace,
        Image = "pocket:latest",
        MetadataAddress = "pocket-metadata:7070",
        WaitUntilReady = false,
    };

    [Fact]
    public async Task TheNamespaceAndCredentialsComeFromTheKubeconfigContext()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = KubernetesProvisioner.Create(Options(null), NullLoggerFactory.Instance, WriteKubeconfig(api.Url, "analytics"));

        Assert.Equal("analytics", provisioner.Namespace);
        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 1L << 30), CancellationToken.None);

        var post = Assert.Single(api.Requests);
        Assert.Equal("/api/v1/namespaces/analytics/pods", post.Path);
        Assert.Equal("Bearer test-bearer-token", post.Authorization);
    }

    [Fact]
    public async Task AConfiguredNamespaceWinsAndDefaultIsTheLastResort()
    {
        await using var api = await FakeApiServer.StartAsync();
        using (var configured = KubernetesProvisioner.Create(Options("pocket"), NullLoggerFactory.Instance, WriteKubeconfig(api.Url, "analytics")))
        {
            Assert.Equal("pocket", configured.Namespace);
        }

        using var fallback = KubernetesProvisioner.Create(Options(null), NullLoggerFactory.Instance, WriteKubeconfig(api.Url, null));
        Assert.Equal("default", fallback.Namespace);
    }

    [Fact]
    public void AMissingKubeconfigIsAProvisioningError()
    {
        var error = Assert.Throws<ProvisioningException>(() => KubernetesProvisioner.Create(Options(null), NullLoggerFactory.Instance, Path.Combine(_dir, "absent")));
        Assert.Contains("no Kubernetes configuration", error.Message, StringComparison.Ordinal);
    }
}
