using k8s;
using k8s.Models;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;
using YamlDotNet.RepresentationModel;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// deploy/kubernetes/monitoring: the Prometheus Operator's ServiceMonitor and PodMonitor parse, select the pods and
/// ports the role manifests really have, and scrape /metrics with the cluster token from the Secret the pods read.
/// </summary>
public sealed class MonitoringManifestTests
{
    private static string Kubernetes()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Pocket.slnx")))
            {
                return Path.Combine(dir.FullName, "deploy", "kubernetes");
            }
        }

        throw new InvalidOperationException("the repository root (Pocket.slnx) is not above the test's directory");
    }

    private static List<YamlMappingNode> Monitors()
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(File.ReadAllText(Path.Combine(Kubernetes(), "monitoring", "pocket-monitors.yaml"))));
        return [.. stream.Documents.Select(d => (YamlMappingNode)d.RootNode)];
    }

    private static YamlNode At(YamlNode node, params string[] path)
    {
        foreach (var key in path)
        {
            node = ((YamlMappingNode)node).Children[new YamlScalarNode(key)];
        }

        return node;
    }

    private static string Text(YamlNode node, params string[] path) => ((YamlScalarNode)At(node, path)).Value!;

    private static Dictionary<string, string> Labels(YamlNode node, params string[] path) =>
        ((YamlMappingNode)At(node, path)).Children.ToDictionary(c => ((YamlScalarNode)c.Key).Value!, c => ((YamlScalarNode)c.Value).Value!);

    private static V1PodTemplateSpec Template(string file, string name) =>
        Assert.Single(KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Kubernetes(), file)), strict: true).OfType<V1Deployment>(), d => d.Metadata.Name == name).Spec.Template;

    [Fact]
    public void TheControllerServiceAndTheMetadataPodAreScrapedWithTheClusterToken()
    {
        var monitors = Monitors();
        Assert.Equal(["PodMonitor", "PodMonitor", "ServiceMonitor"], monitors.Select(m => Text(m, "kind")).Order(StringComparer.Ordinal));
        Assert.All(monitors, m => Assert.Equal("monitoring.coreos.com/v1", Text(m, "apiVersion")));
        Assert.All(monitors, m => Assert.Equal("pocket", Text(m, "metadata", "namespace")));

        var secret = Assert.Single(KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Kubernetes(), "templates", "cluster-token-secret.yaml")), strict: true).OfType<V1Secret>());

        // The controller: a ServiceMonitor on the controller Service's named port.
        var serviceMonitor = Assert.Single(monitors, m => Text(m, "kind") == "ServiceMonitor");
        var controllerService = Assert.Single(KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Kubernetes(), "03-controller.yaml")), strict: true).OfType<V1Service>());
        Assert.All(Labels(serviceMonitor, "spec", "selector", "matchLabels"), l => Assert.Equal(l.Value, controllerService.Metadata.Labels[l.Key]));
        var controllerEndpoint = Assert.Single(((YamlSequenceNode)At(serviceMonitor, "spec", "endpoints")).Children);
        Assert.Contains(controllerService.Spec.Ports, p => p.Name == Text(controllerEndpoint, "port"));
        AssertScrape(controllerEndpoint, secret);

        // The metadata server: a PodMonitor on the pod's metrics port, which the server is told to serve.
        var podMonitor = Assert.Single(monitors, m => Text(m, "metadata", "name") == "pocket-metadata");
        var metadata = Template("02-metadata.yaml", "pocket-metadata");
        Assert.All(Labels(podMonitor, "spec", "selector", "matchLabels"), l => Assert.Equal(l.Value, metadata.Metadata.Labels[l.Key]));
        var podEndpoint = Assert.Single(((YamlSequenceNode)At(podMonitor, "spec", "podMetricsEndpoints")).Children);
        var container = Assert.Single(metadata.Spec.Containers);
        var port = Assert.Single(container.Ports, p => p.Name == Text(podEndpoint, "port"));
        Assert.Equal(port.ContainerPort.ToString(System.Globalization.CultureInfo.InvariantCulture), container.Args[container.Args.IndexOf("--metrics-port") + 1]);
        AssertScrape(podEndpoint, secret);
    }

    [Theory]
    [InlineData(NodeTier.Dram)]
    [InlineData(NodeTier.Ssd)]
    public void TheStoragePodsTheProvisionerStartsAreScrapedOnTheirMetricsPort(NodeTier tier)
    {
        var podMonitor = Assert.Single(Monitors(), m => Text(m, "metadata", "name") == "pocket-storage");
        Assert.Equal("PodMonitor", Text(podMonitor, "kind"));
        var secret = Assert.Single(KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Kubernetes(), "templates", "cluster-token-secret.yaml")), strict: true).OfType<V1Secret>());

        // Exactly the pod the provisioner sends, with its default options.
        var pod = StoragePodSpec.Build(new KubernetesProvisionerOptions { Image = "pocket:latest", MetadataAddress = "pocket-metadata:7070" }, new NodeRequest(tier, 1L << 30), "pocket-storage-x");
        Assert.All(Labels(podMonitor, "spec", "selector", "matchLabels"), l => Assert.Equal(l.Value, pod.Metadata.Labels[l.Key]));
        var endpoint = Assert.Single(((YamlSequenceNode)At(podMonitor, "spec", "podMetricsEndpoints")).Children);
        var container = Assert.Single(pod.Spec.Containers);
        var port = Assert.Single(container.Ports, p => p.Name == Text(endpoint, "port"));
        Assert.Equal(KubernetesProvisionerOptions.DefaultMetricsPort, port.ContainerPort);
        Assert.Equal(port.ContainerPort.ToString(System.Globalization.CultureInfo.InvariantCulture), container.Args[container.Args.IndexOf("--metrics-port") + 1]);
        AssertScrape(endpoint, secret);

        // The metrics listener is a separate port, never the protocol's, and can be turned off.
        Assert.NotEqual(container.Ports.Single(p => p.Name == "pocket").ContainerPort, port.ContainerPort);
        var quiet = StoragePodSpec.Build(new KubernetesProvisionerOptions { Image = "pocket:latest", MetadataAddress = "pocket-metadata:7070", MetricsPort = null }, new NodeRequest(tier, 1L << 30), "pocket-storage-y");
        Assert.DoesNotContain("--metrics-port", quiet.Spec.Containers[0].Args);
        Assert.DoesNotContain(quiet.Spec.Containers[0].Ports, p => p.Name == "metrics");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(70000)]
    [InlineData(KubernetesProvisionerOptions.DefaultStoragePort)]
    public void AMetricsPortThatIsNoPortOrTheStoragePortIsRefused(int metricsPort)
    {
        var options = new KubernetesProvisionerOptions { Image = "pocket:latest", MetadataAddress = "pocket-metadata:7070", Namespace = "pocket", MetricsPort = metricsPort };
        var error = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("metrics port", error.Message, StringComparison.Ordinal);
    }

    private static void AssertScrape(YamlNode endpoint, V1Secret secret)
    {
        Assert.Equal("/metrics", Text(endpoint, "path"));
        Assert.Equal("Bearer", Text(endpoint, "authorization", "type"));
        Assert.Equal(secret.Metadata.Name, Text(endpoint, "authorization", "credentials", "name"));
        Assert.Contains(Text(endpoint, "authorization", "credentials", "key"), secret.StringData.Keys);
    }
}
