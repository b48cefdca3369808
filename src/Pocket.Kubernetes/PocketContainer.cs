using k8s.Models;

namespace Pocket.Kubernetes;

/// <summary>
/// The container block every Pocket pod shares, storage and metadata alike: the image and command, the pod IP and the
/// cluster token in the environment, the role's port (named <c>pocket</c>, the readiness probe's) and the metrics port,
/// and a locked-down security context. Each role adds its own resources and mounts to what this returns.
/// </summary>
internal static class PocketContainer
{
    public const string PodIpVariable = "POD_IP";
    public const string ClusterTokenVariable = "POCKET_CLUSTER_TOKEN";

    /// <summary>The name of the metrics container port, which the PodMonitor in deploy/kubernetes/monitoring scrapes.</summary>
    public const string MetricsPortName = "metrics";

    public static V1Container Build(KubernetesProvisionerOptions options, string name, IList<string> args, int port) => new()
    {
        Name = name,
        Image = options.Image,
        ImagePullPolicy = options.ImagePullPolicy,
        Command = [.. options.Command],
        Args = args,
        Env =
        [
            new V1EnvVar
            {
                // Kubernetes expands $(POD_IP) in the arguments: the role listens on (and a node advertises) the address
                // the cluster reaches it at, which only exists once the pod is scheduled.
                Name = PodIpVariable,
                ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } },
            },
            new V1EnvVar
            {
                // From the Secret, so the token is in no pod spec, no controller log and no `kubectl describe`.
                Name = ClusterTokenVariable,
                ValueFrom = new V1EnvVarSource
                {
                    SecretKeyRef = new V1SecretKeySelector { Name = options.ClusterTokenSecretName, Key = options.ClusterTokenSecretKey, Optional = false },
                },
            },
        ],
        Ports = options.MetricsPort is { } metricsPort
            ? [new V1ContainerPort { Name = "pocket", ContainerPort = port, Protocol = "TCP" }, new V1ContainerPort { Name = MetricsPortName, ContainerPort = metricsPort, Protocol = "TCP" }]
            : [new V1ContainerPort { Name = "pocket", ContainerPort = port, Protocol = "TCP" }],

        // Ready once the role listens: a node registers right after, a metadata server takes registrations at once.
        ReadinessProbe = new V1Probe
        {
            TcpSocket = new V1TCPSocketAction { Port = port },
            PeriodSeconds = 1,
            FailureThreshold = 3,
        },
        SecurityContext = new V1SecurityContext
        {
            AllowPrivilegeEscalation = false,
            RunAsNonRoot = true,
            Capabilities = new V1Capabilities { Drop = ["ALL"] },
        },
    };
}
