using System.Globalization;
using k8s.Models;
using Pocket.Controller.Provisioning;

namespace Pocket.Kubernetes;

/// <summary>
/// The metadata plane on Kubernetes: a StatefulSet of `pocket metadata` pods behind a headless Service. A StatefulSet,
/// not a Deployment, because a metadata server's address is what storage nodes and clients hold: server i is always
/// <c>SET-i.SET.NAMESPACE.svc:PORT</c>, so a pod that dies comes back (restarted by the StatefulSet, empty) where the
/// nodes and the lost jobs' clients look, which a Deployment's random pod names and IPs cannot give. Scaling is the
/// set's replica count; each pod numbers its jobs by its ordinal (the pod-index label, read through the downward API)
/// with a fixed stride of <see cref="KubernetesProvisionerOptions.MaxMetadataServers"/>, so job ids stay unique however
/// many servers run. Kept apart from the API calls, like <see cref="StoragePodSpec"/>, so what is sent can be checked.
/// </summary>
internal static class MetadataPlaneSpec
{
    public const string ContainerName = "metadata";
    public const string PodIndexVariable = "POD_INDEX";

    /// <summary>The label Kubernetes (1.28 and later) puts on each StatefulSet pod: its ordinal.</summary>
    public const string PodIndexLabel = "apps.kubernetes.io/pod-index";

    /// <summary>Where server <paramref name="index"/> of the plane is reached, host:port.</summary>
    public static string Address(KubernetesProvisionerOptions options, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"{options.MetadataSetName}-{index}.{options.MetadataSetName}.{options.Namespace}.svc:{options.MetadataPort}");

    /// <summary>Every server address of a plane of <paramref name="servers"/>, in ordinal order (what storage nodes are given).</summary>
    public static IReadOnlyList<string> Addresses(KubernetesProvisionerOptions options, int servers) =>
        [.. Enumerable.Range(0, servers).Select(i => Address(options, i))];

    private static Dictionary<string, string> Labels(KubernetesProvisionerOptions options) => new(options.Labels)
    {
        [KubernetesProvisioner.NameLabel] = "pocket",
        ["app.kubernetes.io/component"] = "metadata",
        ["app.kubernetes.io/managed-by"] = "pocket-controller",
        [KubernetesProvisioner.RoleLabel] = "metadata",
    };

    private static Dictionary<string, string> Selector => new()
    {
        [KubernetesProvisioner.NameLabel] = "pocket",
        [KubernetesProvisioner.RoleLabel] = "metadata",
    };

    /// <summary>The headless Service that gives each pod of the set its stable DNS name.</summary>
    public static V1Service Service(KubernetesProvisionerOptions options) => new()
    {
        ApiVersion = "v1",
        Kind = "Service",
        Metadata = new V1ObjectMeta { Name = options.MetadataSetName, NamespaceProperty = options.Namespace, Labels = Labels(options) },
        Spec = new V1ServiceSpec
        {
            ClusterIP = "None",

            // Nodes register with a server as soon as it listens; readiness is "listens", so nothing waits on it.
            PublishNotReadyAddresses = true,
            Selector = Selector,
            Ports = [new V1ServicePort { Name = "pocket", Port = options.MetadataPort, TargetPort = options.MetadataPort, Protocol = "TCP" }],
        },
    };

    /// <summary>The StatefulSet of <paramref name="replicas"/> metadata servers.</summary>
    public static V1StatefulSet StatefulSet(KubernetesProvisionerOptions options, int replicas)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(replicas);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(replicas, options.MaxMetadataServers);
        var args = RoleCommandLine.Metadata(new MetadataRoleArguments($"$({StoragePodSpec.PodIpVariable})", options.MetadataPort)
        {
            MetricsPort = options.MetricsPort,
            Verbose = options.VerboseLogs,
        });

        // The ordinal is only known in the pod: Kubernetes expands $(POD_INDEX) from the env below.
        args.AddRange(["--job-numbers", string.Create(CultureInfo.InvariantCulture, $"$({PodIndexVariable})/{options.MaxMetadataServers}")]);
        var ports = new List<V1ContainerPort> { new() { Name = "pocket", ContainerPort = options.MetadataPort, Protocol = "TCP" } };
        if (options.MetricsPort is { } metrics)
        {
            ports.Add(new V1ContainerPort { Name = StoragePodSpec.MetricsPortName, ContainerPort = metrics, Protocol = "TCP" });
        }

        var container = new V1Container
        {
            Name = ContainerName,
            Image = options.Image,
            ImagePullPolicy = options.ImagePullPolicy,
            Command = [.. options.Command],
            Args = args,
            Env =
            [
                new V1EnvVar { Name = StoragePodSpec.PodIpVariable, ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } } },
                new V1EnvVar { Name = PodIndexVariable, ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = $"metadata.labels['{PodIndexLabel}']" } } },
                new V1EnvVar
                {
                    Name = StoragePodSpec.ClusterTokenVariable,
                    ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = options.ClusterTokenSecretName, Key = options.ClusterTokenSecretKey, Optional = false } },
                },
            ],
            Ports = ports,
            ReadinessProbe = new V1Probe { TcpSocket = new V1TCPSocketAction { Port = options.MetadataPort }, PeriodSeconds = 1, FailureThreshold = 3 },
            SecurityContext = new V1SecurityContext { AllowPrivilegeEscalation = false, RunAsNonRoot = true, Capabilities = new V1Capabilities { Drop = ["ALL"] } },
        };

        return new V1StatefulSet
        {
            ApiVersion = "apps/v1",
            Kind = "StatefulSet",
            Metadata = new V1ObjectMeta { Name = options.MetadataSetName, NamespaceProperty = options.Namespace, Labels = Labels(options) },
            Spec = new V1StatefulSetSpec
            {
                Replicas = replicas,
                ServiceName = options.MetadataSetName,

                // Servers are independent: start and stop them all at once rather than one ordinal after another.
                PodManagementPolicy = "Parallel",
                Selector = new V1LabelSelector { MatchLabels = Selector },
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Labels = Labels(options) },
                    Spec = new V1PodSpec
                    {
                        Containers = [container],
                        AutomountServiceAccountToken = false,
                        EnableServiceLinks = false,
                        TerminationGracePeriodSeconds = (long)options.DeleteGracePeriod.TotalSeconds,
                        NodeSelector = options.NodeSelector.Count == 0 ? null : new Dictionary<string, string>(options.NodeSelector),
                    },
                },
            },
        };
    }
}
