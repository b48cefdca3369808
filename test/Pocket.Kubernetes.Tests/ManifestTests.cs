using k8s;
using k8s.Models;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// The manifests in deploy/kubernetes parse as the library's own types (strictly: an unknown or misspelt field
/// fails), fit together (names, ports, selectors, the Secret, the Role), and the example storage pod is exactly
/// what the provisioner sends. No cluster applies them here.
/// </summary>
public sealed class ManifestTests
{
    private const string Ns = "pocket";

    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Pocket.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("the repository root (Pocket.slnx) is not above the test's directory");
    }

    private static string Deploy => Path.Combine(Root(), "deploy");

    internal static List<object> Load(string relativePath) =>
        KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Deploy, "kubernetes", relativePath)), strict: true);

    // monitoring/ holds the Prometheus Operator's kinds, which the Kubernetes library does not know: checked apart.
    private static IEnumerable<string> CoreManifests() =>
        Directory.EnumerateFiles(Path.Combine(Deploy, "kubernetes"), "*.yaml", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}monitoring{Path.DirectorySeparatorChar}", StringComparison.Ordinal));

    private static List<object> All() =>
        [.. CoreManifests()
            .Order(StringComparer.Ordinal)
            .SelectMany(f => KubernetesYaml.LoadAllFromString(File.ReadAllText(f), strict: true))];

    private static T One<T>(IEnumerable<object> objects, string name)
        where T : IMetadata<V1ObjectMeta> =>
        Assert.Single(objects.OfType<T>(), o => o.Metadata.Name == name);

    [Fact]
    public void EveryManifestParsesStrictlyIntoKnownKinds()
    {
        var files = CoreManifests().ToList();
        Assert.True(files.Count >= 6, $"expected the deploy/kubernetes manifests, found {files.Count} files");
        foreach (var file in files)
        {
            var objects = KubernetesYaml.LoadAllFromString(File.ReadAllText(file), strict: true);
            Assert.NotEmpty(objects);
            Assert.All(objects, o => Assert.IsAssignableFrom<IKubernetesObject<V1ObjectMeta>>(o));
        }

        var all = All();
        Assert.Equal(
            ["Deployment", "Namespace", "Pod", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"],
            all.Cast<IKubernetesObject>().Select(o => o.Kind).Distinct().Order(StringComparer.Ordinal));

        // Everything but the namespace itself lives in it, and says it is Pocket's.
        foreach (var o in all.Cast<IKubernetesObject<V1ObjectMeta>>())
        {
            Assert.Equal("pocket", o.Metadata.Labels["app.kubernetes.io/name"]);
            if (o is not V1Namespace)
            {
                Assert.Equal(Ns, o.Metadata.NamespaceProperty);
            }
        }

        Assert.Equal(Ns, One<V1Namespace>(all, Ns).Metadata.Name);
    }

    [Fact]
    public void ApplyingTheFolderCreatesNoSecretAndNoStoragePod()
    {
        // `kubectl apply -f deploy/kubernetes/` reads the top folder only: the placeholder Secret must not replace the
        // real one, and a hand-made storage pod would be one the controller does not know.
        var applied = Directory.EnumerateFiles(Path.Combine(Deploy, "kubernetes"), "*.yaml", SearchOption.TopDirectoryOnly)
            .SelectMany(f => KubernetesYaml.LoadAllFromString(File.ReadAllText(f), strict: true))
            .ToList();
        Assert.NotEmpty(applied);
        Assert.DoesNotContain(applied, o => o is V1Secret or V1Pod);
    }

    [Fact]
    public void TheSecretTemplateNamesTheKeyEveryPodReadsAndHoldsNoUsableToken()
    {
        var secret = One<V1Secret>(Load("templates/cluster-token-secret.yaml"), "pocket-cluster-token");
        var placeholder = secret.StringData["token"];
        Assert.False(JobToken.TryParse(placeholder, out _), "the template must not ship a token anyone could use");

        var containers = All().OfType<V1Deployment>().SelectMany(d => d.Spec.Template.Spec.Containers)
            .Concat(All().OfType<V1Pod>().SelectMany(p => p.Spec.Containers));
        foreach (var container in containers)
        {
            var token = Assert.Single(container.Env, e => e.Name == "POCKET_CLUSTER_TOKEN");
            Assert.Null(token.Value);
            Assert.Equal(secret.Metadata.Name, token.ValueFrom.SecretKeyRef.Name);
            Assert.Equal("token", token.ValueFrom.SecretKeyRef.Key);
        }
    }

    [Fact]
    public void TheControllerMayCreateDeleteAndWatchPodsInItsNamespaceOnly()
    {
        var objects = Load("01-controller-rbac.yaml");
        var account = One<V1ServiceAccount>(objects, "pocket-controller");
        var role = One<V1Role>(objects, "pocket-controller");
        var binding = One<V1RoleBinding>(objects, "pocket-controller");

        var rule = Assert.Single(role.Rules);
        Assert.Equal([string.Empty], rule.ApiGroups);
        Assert.Equal(["pods"], rule.Resources);
        Assert.Equal(["create", "delete", "get", "list", "watch"], rule.Verbs.Order(StringComparer.Ordinal));

        Assert.Equal("Role", binding.RoleRef.Kind);
        Assert.Equal(role.Metadata.Name, binding.RoleRef.Name);
        var subject = Assert.Single(binding.Subjects);
        Assert.Equal(("ServiceAccount", account.Metadata.Name, Ns), (subject.Kind, subject.Name, subject.NamespaceProperty));

        var controller = One<V1Deployment>(Load("03-controller.yaml"), "pocket-controller");
        Assert.Equal(account.Metadata.Name, controller.Spec.Template.Spec.ServiceAccountName);
    }

    [Theory]
    [InlineData("02-metadata.yaml", "pocket-metadata", "metadata", 7070)]
    [InlineData("03-controller.yaml", "pocket-controller", "controller", 7080)]
    public void EachRoleIsOneDeploymentBehindAServiceOnItsPort(string file, string name, string role, int port)
    {
        var objects = Load(file);
        var deployment = One<V1Deployment>(objects, name);
        var service = One<V1Service>(objects, name);

        Assert.Equal(1, deployment.Spec.Replicas);
        Assert.Equal("Recreate", deployment.Spec.Strategy.Type);
        var template = deployment.Spec.Template;
        Assert.Equal(role, template.Metadata.Labels["pocket.io/role"]);
        Assert.All(deployment.Spec.Selector.MatchLabels, l => Assert.Equal(l.Value, template.Metadata.Labels[l.Key]));
        Assert.All(service.Spec.Selector, l => Assert.Equal(l.Value, template.Metadata.Labels[l.Key]));

        var container = Assert.Single(template.Spec.Containers);
        Assert.Equal(["pocket"], container.Command);
        Assert.Equal(role, container.Args[0]);
        Assert.Equal(port.ToString(System.Globalization.CultureInfo.InvariantCulture), container.Args[container.Args.IndexOf("--port") + 1]);
        Assert.Equal("0.0.0.0", container.Args[container.Args.IndexOf("--host") + 1]);
        Assert.Equal(port, Assert.Single(container.Ports, p => p.Name is "pocket" or "http").ContainerPort);
        Assert.NotNull(container.ReadinessProbe);
        Assert.False(template.Spec.EnableServiceLinks);

        var servicePort = Assert.Single(service.Spec.Ports);
        Assert.Equal(port, servicePort.Port);
        Assert.Equal(port.ToString(System.Globalization.CultureInfo.InvariantCulture), servicePort.TargetPort.Value);
    }

    [Fact]
    public void TheControllerProvisionsPodsOfItsOwnImageAgainstTheMetadataService()
    {
        var metadata = One<V1Service>(Load("02-metadata.yaml"), "pocket-metadata");
        var deployment = One<V1Deployment>(Load("03-controller.yaml"), "pocket-controller");
        var container = Assert.Single(deployment.Spec.Template.Spec.Containers);
        string Arg(string flag) => container.Args[container.Args.IndexOf(flag) + 1];

        Assert.Equal($"{metadata.Metadata.Name}:{metadata.Spec.Ports[0].Port}", Arg("--metadata"));
        Assert.Equal("kubernetes", Arg("--provisioner"));
        Assert.Equal(container.Image, Arg("--kubernetes-image"));
        Assert.Equal("pocket-cluster-token", Arg("--kubernetes-token-secret"));
        Assert.Equal("/healthz", container.ReadinessProbe.HttpGet.Path);

        var metadataContainer = Assert.Single(One<V1Deployment>(Load("02-metadata.yaml"), "pocket-metadata").Spec.Template.Spec.Containers);
        Assert.Equal(container.Image, metadataContainer.Image);
    }

    [Theory]
    [InlineData("pocket-storage-dram-example", NodeTier.Dram, 1L << 30)]
    [InlineData("pocket-storage-ssd-example", NodeTier.Ssd, 100L << 30)]
    public void TheExampleStoragePodIsExactlyWhatTheProvisionerSends(string name, NodeTier tier, long capacity)
    {
        var example = One<V1Pod>(Load("examples/storage-pod.yaml"), name);
        var controller = Assert.Single(One<V1Deployment>(Load("03-controller.yaml"), "pocket-controller").Spec.Template.Spec.Containers);
        var options = new KubernetesProvisionerOptions
        {
            Namespace = Ns,
            Image = controller.Image,
            MetadataAddress = controller.Args[controller.Args.IndexOf("--metadata") + 1],
        };

        var sent = StoragePodSpec.Build(options, new NodeRequest(tier, capacity), name);

        Assert.Equal(KubernetesJson.Serialize(sent), KubernetesJson.Serialize(example));
    }

    [Fact]
    public void TheDockerfileBuildsThePocketExecutableOntoTheAspNetRuntime()
    {
        var dockerfile = File.ReadAllLines(Path.Combine(Deploy, "Dockerfile"));
        var stages = dockerfile.Where(l => l.StartsWith("FROM ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, stages.Count);
        Assert.Contains("mcr.microsoft.com/dotnet/sdk:", stages[0], StringComparison.Ordinal);
        Assert.Contains("mcr.microsoft.com/dotnet/aspnet:", stages[1], StringComparison.Ordinal);
        var publish = Assert.Single(dockerfile, l => l.Contains("dotnet publish src/Pocket.Cli/Pocket.Cli.csproj", StringComparison.Ordinal));

        // For a runtime identifier, so that the project's ReadyToRun setting applies (it needs one), still on the shared runtime.
        Assert.Contains("-r \"$rid\"", publish, StringComparison.Ordinal);
        Assert.Contains("--no-self-contained", publish, StringComparison.Ordinal);
        Assert.Contains(dockerfile, l => l.Trim() == "ARG TARGETARCH");
        var project = File.ReadAllText(Path.Combine(Root(), "src", "Pocket.Cli", "Pocket.Cli.csproj"));
        Assert.Contains("<PublishReadyToRun Condition=\"'$(RuntimeIdentifier)' != ''\">true</PublishReadyToRun>", project, StringComparison.Ordinal);
        Assert.Contains(dockerfile, l => l.StartsWith("USER ", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(Root(), "src", "Pocket.Cli", "Pocket.Cli.csproj")));
    }
}
