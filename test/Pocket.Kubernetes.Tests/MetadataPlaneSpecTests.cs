using k8s;
using k8s.Models;
using Pocket.Controller.Provisioning;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// The metadata plane's pods and headless Service as the provisioner sends them. No cluster runs here (no kind or k3s
/// on this machine), so these check the generated objects through the client library's serializer.
/// </summary>
public sealed class MetadataPlaneSpecTests
{
    private static readonly KubernetesProvisionerOptions Options = new()
    {
        Namespace = "pocket",
        Image = "ghcr.io/example/pocket:1",
    };

    [Fact]
    public void EachServerHasAStableAddressFromItsPlace()
    {
        Assert.Equal(
            ["pocket-metadata-plane-0.pocket-metadata-plane.pocket.svc:7000", "pocket-metadata-plane-1.pocket-metadata-plane.pocket.svc:7000"],
            MetadataPlaneSpec.Addresses(Options, 2));
        var service = MetadataPlaneSpec.Service(Options);
        Assert.Equal("None", service.Spec.ClusterIP);
        Assert.True(service.Spec.PublishNotReadyAddresses);
        Assert.Equal(Options.MetadataSetName, service.Metadata.Name);
        var pod = MetadataPlaneSpec.Pod(Options, 1, new MetadataServerRequest(7000, 1, 2));
        Assert.Equal("pocket-metadata-plane-1", pod.Spec.Hostname);
        Assert.Equal(service.Metadata.Name, pod.Spec.Subdomain);
        Assert.All(service.Spec.Selector, label => Assert.Equal(label.Value, pod.Metadata.Labels[label.Key]));
        Assert.Equal(1, MetadataPlaneSpec.IndexOf(Options, "pocket-metadata-plane-1"));
        Assert.Equal(-1, MetadataPlaneSpec.IndexOf(Options, "pocket-metadata-plane-x"));
        Assert.Equal(-1, MetadataPlaneSpec.IndexOf(Options, "pocket-metadata-plane-16"));
    }

    [Fact]
    public void StoragePodsAndMetadataPodsShareOneContainerBlock()
    {
        var metadata = Assert.Single(MetadataPlaneSpec.Pod(Options, 0, new MetadataServerRequest(0, 0, 1)).Spec.Containers);
        var storage = Assert.Single(StoragePodSpec.Build(Options, new NodeRequest(Pocket.Protocol.NodeTier.Dram, 1L << 30), "pocket-storage-dram-x").Spec.Containers);
        Assert.Equal(KubernetesJson.Serialize(storage.Env), KubernetesJson.Serialize(metadata.Env));
        Assert.Equal(KubernetesJson.Serialize(storage.SecurityContext), KubernetesJson.Serialize(metadata.SecurityContext));
        Assert.Equal(storage.Image, metadata.Image);
        Assert.Equal(storage.Command, metadata.Command);
        Assert.Equal("7000", metadata.ReadinessProbe.TcpSocket.Port.Value);
        Assert.Equal(["pocket", "metrics"], metadata.Ports.Select(p => p.Name));

        // What is sent parses back as the same pod (the client library's own serializer, both ways).
        var pod = MetadataPlaneSpec.Pod(Options, 0, new MetadataServerRequest(0, 0, 1));
        var json = KubernetesJson.Serialize(pod);
        Assert.Equal(json, KubernetesJson.Serialize(KubernetesJson.Deserialize<V1Pod>(json)));
    }

    [Fact]
    public void APlanePodAsksForWhatTheShippedMetadataDeploymentAsksFor()
    {
        // The scheduler must keep room for a plane's server as it does for the one of 02-metadata.yaml; without requests
        // a busy Kubernetes node would take it and its limit would not bound a runaway server.
        var shipped = Assert.Single(Assert.Single(ManifestTests.Load("02-metadata.yaml").OfType<V1Deployment>()).Spec.Template.Spec.Containers);
        var plane = Assert.Single(MetadataPlaneSpec.Pod(Options, 0, new MetadataServerRequest(0, 0, 1)).Spec.Containers);
        Assert.Equal(KubernetesJson.Serialize(shipped.Resources), KubernetesJson.Serialize(plane.Resources));

        var unlimited = Assert.Single(MetadataPlaneSpec.Pod(Options with { MetadataMemoryLimit = null, MetadataCpuRequest = "500m" }, 0, new MetadataServerRequest(0, 0, 1)).Spec.Containers);
        Assert.Null(unlimited.Resources.Limits);
        Assert.Equal("500m", unlimited.Resources.Requests["cpu"].ToString());
        Assert.Contains("memory request 'lots'", Assert.Throws<ArgumentException>(() => (Options with { MetadataMemoryRequest = "lots" }).Validate()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ThePlaneCannotGrowPastItsMaximumAndBadSettingsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => MetadataPlaneSpec.Pod(Options, 16, new MetadataServerRequest(0, 16, 17)));
        Assert.Throws<ArgumentOutOfRangeException>(() => MetadataPlaneSpec.Pod(Options, -1, new MetadataServerRequest(0)));
        Assert.Contains("metadata set name", Assert.Throws<ArgumentException>(() => (Options with { MetadataSetName = "Not_A_Label" }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("max metadata servers", Assert.Throws<ArgumentException>(() => (Options with { MaxMetadataServers = 0 }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("metadata port", Assert.Throws<ArgumentException>(() => (Options with { MetadataPort = 70000 }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("request timeout", Assert.Throws<ArgumentException>(() => (Options with { RequestTimeout = TimeSpan.Zero }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("not host:port", Assert.Throws<ArgumentException>(() => (Options with { MetadataAddress = "a:7000,b" }).Validate()).Message, StringComparison.Ordinal);
    }
}
