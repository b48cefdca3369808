using System.Globalization;
using k8s.Models;
using Pocket.Controller.Provisioning;

namespace Pocket.Kubernetes;

/// <summary>
/// The metadata plane on Kubernetes: one `pocket metadata` pod per server behind a headless Service. Server i is pod
/// <c>PLANE-i</c> with hostname <c>PLANE-i</c> and subdomain <c>PLANE</c>, so it is always reached at
/// <c>PLANE-i.PLANE.NAMESPACE.svc:PORT</c>, the address storage nodes and clients hold, whichever pod serves it.
/// One pod per server rather than a StatefulSet: a StatefulSet only removes its highest ordinal and restarts a dead pod
/// by itself, while the controller drains whichever server is least loaded and must hand a replacement the lost jobs'
/// tokens (a Secret mounted as its --lost-jobs file) before it starts. The pods do not restart (restartPolicy Never):
/// a server that exits is noticed by the controller, its jobs reported lost, and a new pod started at its address.
/// Kept apart from the API calls, like <see cref="StoragePodSpec"/>, so what is sent can be checked.
/// </summary>
internal static class MetadataPlaneSpec
{
    public const string ContainerName = "metadata";

    /// <summary>Label holding a metadata pod's place in the plane (its ordinal).</summary>
    public const string ServerLabel = "pocket.io/metadata-server";

    /// <summary>The key of the lost-jobs file in a replacement's Secret, and the file's name where it is mounted.</summary>
    public const string LostJobsKey = "lost-jobs";

    /// <summary>Where a replacement pod finds the jobs lost with the server it replaces.</summary>
    public const string LostJobsDirectory = "/var/run/pocket/lost";

    private const string LostJobsVolume = "lost-jobs";

    /// <summary>Selects every metadata pod a Pocket controller made in a namespace.</summary>
    public static string Selector => $"{KubernetesProvisioner.NameLabel}=pocket,{KubernetesProvisioner.RoleLabel}=metadata";

    /// <summary>Where server <paramref name="index"/> of the plane is reached, host:port.</summary>
    public static string Address(KubernetesProvisionerOptions options, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"{PodName(options, index)}.{options.MetadataSetName}.{options.Namespace}.svc:{options.MetadataPort}");

    /// <summary>Every server address of a plane of <paramref name="servers"/>, in ordinal order (what storage nodes are given).</summary>
    public static IReadOnlyList<string> Addresses(KubernetesProvisionerOptions options, int servers) =>
        [.. Enumerable.Range(0, servers).Select(i => Address(options, i))];

    /// <summary>The metadata addresses storage pods are started with: the configured ones, or every server the plane may have.</summary>
    public static string StorageNodesAddress(KubernetesProvisionerOptions options) =>
        options.MetadataAddress ?? string.Join(',', Addresses(options, options.MaxMetadataServers));

    /// <summary>The pod of server <paramref name="index"/>.</summary>
    public static string PodName(KubernetesProvisionerOptions options, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"{options.MetadataSetName}-{index}");

    /// <summary>The Secret holding the tokens of the jobs lost with the server a replacement at <paramref name="index"/> replaces.</summary>
    public static string LostJobsSecretName(KubernetesProvisionerOptions options, int index) => PodName(options, index) + "-lost-jobs";

    /// <summary>The server number a pod name of this plane stands for, or -1.</summary>
    public static int IndexOf(KubernetesProvisionerOptions options, string podName)
    {
        var prefix = options.MetadataSetName + "-";
        return podName.StartsWith(prefix, StringComparison.Ordinal)
            && int.TryParse(podName.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var index)
            && index < options.MaxMetadataServers
            && PodName(options, index) == podName
            ? index
            : -1;
    }

    private static Dictionary<string, string> Labels(KubernetesProvisionerOptions options) => new(options.Labels)
    {
        [KubernetesProvisioner.NameLabel] = "pocket",
        ["app.kubernetes.io/component"] = "metadata",
        ["app.kubernetes.io/managed-by"] = "pocket-controller",
        [KubernetesProvisioner.RoleLabel] = "metadata",
    };

    private static Dictionary<string, string> ServiceSelector => new()
    {
        [KubernetesProvisioner.NameLabel] = "pocket",
        [KubernetesProvisioner.RoleLabel] = "metadata",
    };

    /// <summary>The headless Service that gives each metadata pod (hostname + this subdomain) its stable DNS name.</summary>
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
            Selector = ServiceSelector,
            Ports = [new V1ServicePort { Name = "pocket", Port = options.MetadataPort, TargetPort = options.MetadataPort, Protocol = "TCP" }],
        },
    };

    /// <summary>
    /// The pod of server <paramref name="index"/>: its jobs are numbered by the request's offset and stride (the
    /// controller's place for it), and a replacement reads its lost jobs from <see cref="LostJobsSecretName"/>.
    /// </summary>
    public static V1Pod Pod(KubernetesProvisionerOptions options, int index, MetadataServerRequest request)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, options.MaxMetadataServers);
        var lost = request.LostJobs.Count > 0;
        var args = RoleCommandLine.Metadata(new MetadataRoleArguments($"$({PocketContainer.PodIpVariable})", options.MetadataPort)
        {
            MetricsPort = options.MetricsPort,
            Verbose = options.VerboseLogs,
            JobNumbers = (request.Offset, request.Stride),
            LostJobsFile = lost ? $"{LostJobsDirectory}/{LostJobsKey}" : null,
        });
        var container = PocketContainer.Build(options, ContainerName, args, options.MetadataPort);
        container.Resources = new V1ResourceRequirements
        {
            Requests = new Dictionary<string, ResourceQuantity> { ["cpu"] = new(options.MetadataCpuRequest), ["memory"] = new(options.MetadataMemoryRequest) },
            Limits = options.MetadataMemoryLimit is { } limit ? new Dictionary<string, ResourceQuantity> { ["memory"] = new(limit) } : null,
        };
        if (lost)
        {
            container.VolumeMounts = [new V1VolumeMount { Name = LostJobsVolume, MountPath = LostJobsDirectory, ReadOnlyProperty = true }];
        }

        var labels = Labels(options);
        labels[ServerLabel] = index.ToString(CultureInfo.InvariantCulture);
        var name = PodName(options, index);
        var pod = new V1Pod
        {
            ApiVersion = "v1",
            Kind = "Pod",
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = options.Namespace, Labels = labels },
            Spec = new V1PodSpec
            {
                Containers = [container],
                Hostname = name,
                Subdomain = options.MetadataSetName,

                // A restarted server would come back empty with no word of its lost jobs; the controller replaces it.
                RestartPolicy = "Never",
                AutomountServiceAccountToken = false,
                EnableServiceLinks = false,
                TerminationGracePeriodSeconds = (long)options.DeleteGracePeriod.TotalSeconds,
                NodeSelector = options.NodeSelector.Count == 0 ? null : new Dictionary<string, string>(options.NodeSelector),
                // The image runs as a non-root user: with an fsGroup the file is the group's (mode 0440), else it must
                // be readable by all in the pod (0444); nothing else runs in it.
                SecurityContext = options.FsGroup is { } fsGroup ? new V1PodSecurityContext { FsGroup = fsGroup } : null,
                Volumes = lost
                    ? [new V1Volume { Name = LostJobsVolume, Secret = new V1SecretVolumeSource { SecretName = LostJobsSecretName(options, index), DefaultMode = options.FsGroup is null ? 292 : 288 } }]
                    : null,
            },
        };
        options.CustomizePod?.Invoke(pod);
        return pod;
    }

    /// <summary>The Secret of a replacement's lost jobs: tokens, so a Secret, and only the replacement pod mounts it.</summary>
    public static V1Secret LostJobsSecret(KubernetesProvisionerOptions options, int index, IReadOnlyList<LostJobLine> jobs) => new()
    {
        ApiVersion = "v1",
        Kind = "Secret",
        Type = "Opaque",
        Metadata = new V1ObjectMeta { Name = LostJobsSecretName(options, index), NamespaceProperty = options.Namespace, Labels = Labels(options) },
        StringData = new Dictionary<string, string> { [LostJobsKey] = RoleCommandLine.LostJobsText(jobs) },
    };
}
