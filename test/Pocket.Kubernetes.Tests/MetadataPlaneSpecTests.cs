using k8s;
using k8s.Models;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// The metadata plane's StatefulSet and headless Service as the provisioner would send them. No cluster runs here
/// (no kind or k3s on this machine), so these check the generated objects through the client library's serializer.
/// </summary>
public sealed class MetadataPlaneSpecTests
{
    private static readonly KubernetesProvisionerOptions Options = new()
    {
        Namespace = "pocket",
        Image = "ghcr.io/example/pocket:1",
        MetadataAddress = "pocket-metadata.pocket.svc:7000",
    };

    [Fact]
    public void EachServerHasAStableAddressFromItsOrdinal()
    {
        Assert.Equal(
            ["pocket-metadata-plane-0.pocket-metadata-plane.pocket.svc:7000", "pocket-metadata-plane-1.pocket-metadata-plane.pocket.svc:7000"],
            MetadataPlaneSpec.Addresses(Options, 2));
        var service = MetadataPlaneSpec.Service(Options);
        Assert.Equal("None", service.Spec.ClusterIP);
        Assert.Equal(Options.MetadataSetName, service.Metadata.Name);
        var set = MetadataPlaneSpec.StatefulSet(Options, 2);
        Assert.Equal(service.Metadata.Name, set.Spec.ServiceName);
        Assert.Equal(service.Spec.Selector, set.Spec.Selector.MatchLabels);
        Assert.All(service.Spec.Selector, label => Assert.Equal(label.Value, set.Spec.Template.Metadata.Labels[label.Key]));
    }

    [Fact]
    public void ThePodsRunPocketMetadataNumberingJobsByOrdinalWithAFixedStride()
    {
        var set = MetadataPlaneSpec.StatefulSet(Options, 3);
        Assert.Equal(3, set.Spec.Replicas);
        Assert.Equal("Parallel", set.Spec.PodManagementPolicy);
        var container = Assert.Single(set.Spec.Template.Spec.Containers);
        Assert.Equal(Options.Image, container.Image);
        Assert.Equal("metadata", container.Args[0]);
        Assert.Equal("$(POD_IP)", container.Args[container.Args.IndexOf("--host") + 1]);
        Assert.Equal("7000", container.Args[container.Args.IndexOf("--port") + 1]);
        Assert.Equal("$(POD_INDEX)/16", container.Args[container.Args.IndexOf("--job-numbers") + 1]);
        var index = Assert.Single(container.Env, e => e.Name == "POD_INDEX");
        Assert.Equal("metadata.labels['apps.kubernetes.io/pod-index']", index.ValueFrom.FieldRef.FieldPath);
        var token = Assert.Single(container.Env, e => e.Name == "POCKET_CLUSTER_TOKEN");
        Assert.Equal(Options.ClusterTokenSecretName, token.ValueFrom.SecretKeyRef.Name);
        Assert.Equal("7000", container.ReadinessProbe.TcpSocket.Port.Value);

        // What is sent parses back as the same StatefulSet (the client library's own serializer, both ways).
        var json = KubernetesJson.Serialize(set);
        Assert.Equal(json, KubernetesJson.Serialize(KubernetesJson.Deserialize<V1StatefulSet>(json)));
    }

    [Fact]
    public void ThePlaneCannotGrowPastItsMaximumAndBadSettingsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => MetadataPlaneSpec.StatefulSet(Options, 17));
        Assert.Throws<ArgumentOutOfRangeException>(() => MetadataPlaneSpec.StatefulSet(Options, -1));
        Assert.Contains("metadata set name", Assert.Throws<ArgumentException>(() => (Options with { MetadataSetName = "Not_A_Label" }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("max metadata servers", Assert.Throws<ArgumentException>(() => (Options with { MaxMetadataServers = 0 }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("metadata port", Assert.Throws<ArgumentException>(() => (Options with { MetadataPort = 70000 }).Validate()).Message, StringComparison.Ordinal);
    }
}
