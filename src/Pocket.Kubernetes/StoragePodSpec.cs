using System.Globalization;
using k8s.Models;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes;

/// <summary>
/// The pod of one storage node: `pocket storage` advertising its pod IP on a fixed port, the cluster token from a
/// Secret, memory or a volume of the node's capacity. Kept apart from the API calls so the example manifest in
/// deploy/kubernetes can be checked against exactly what is sent.
/// </summary>
internal static class StoragePodSpec
{
    public const string ContainerName = "storage";
    public const string VolumeName = "data";
    public const string PodIpVariable = PocketContainer.PodIpVariable;
    public const string ClusterTokenVariable = PocketContainer.ClusterTokenVariable;

    /// <summary>The name of the metrics container port, which the PodMonitor in deploy/kubernetes/monitoring scrapes.</summary>
    public const string MetricsPortName = PocketContainer.MetricsPortName;

    /// <summary>Selects every storage pod a Pocket controller made in a namespace.</summary>
    public static string Selector => $"{KubernetesProvisioner.NameLabel}=pocket,{KubernetesProvisioner.RoleLabel}=storage";

    public static V1Pod Build(KubernetesProvisionerOptions options, NodeRequest request, string name)
    {
        var tier = options.ForTier(request.Tier);
        var tierName = request.Tier.Name();
        var isDram = request.Tier == NodeTier.Dram;

        var labels = new Dictionary<string, string>(options.Labels)
        {
            [KubernetesProvisioner.NameLabel] = "pocket",
            ["app.kubernetes.io/component"] = "storage",
            ["app.kubernetes.io/managed-by"] = "pocket-controller",
            [KubernetesProvisioner.RoleLabel] = "storage",
            [KubernetesProvisioner.TierLabel] = tierName,
        };

        var nodeSelector = new Dictionary<string, string>(options.NodeSelector);
        foreach (var (key, value) in tier.NodeSelector)
        {
            nodeSelector[key] = value;
        }

        var args = RoleCommandLine.Storage(new StorageRoleArguments(MetadataPlaneSpec.StorageNodesAddress(options), request.Tier, request.CapacityBytes)
        {
            Host = $"$({PodIpVariable})",
            Port = options.StoragePort,
            BlockSize = options.BlockSize,
            DataDirectory = options.DataPath,
            Verbose = options.VerboseLogs,
            Standby = request.Standby,
            MetricsPort = options.MetricsPort,
        });

        // DRAM nodes hold their whole capacity in native memory; request = limit so the scheduler reserves it all.
        var memory = Quantity(isDram ? checked(request.CapacityBytes + tier.MemoryOverheadBytes) : tier.MemoryOverheadBytes);
        var requests = new Dictionary<string, ResourceQuantity> { ["memory"] = memory, ["cpu"] = new(tier.CpuRequest) };
        var limits = new Dictionary<string, ResourceQuantity> { ["memory"] = memory };
        if (tier.CpuLimit is { } cpuLimit)
        {
            limits["cpu"] = new ResourceQuantity(cpuLimit);
        }

        var volumeBytes = isDram ? 0 : checked(request.CapacityBytes + tier.DiskOverheadBytes);
        if (!isDram && tier.Volume == StorageVolumeKind.EmptyDir)
        {
            // The kubelet evicts a pod whose emptyDir outgrows its limit; asking for the same amount of local disk
            // makes the scheduler pick a machine that has it.
            requests["ephemeral-storage"] = Quantity(volumeBytes);
            limits["ephemeral-storage"] = Quantity(volumeBytes);
        }

        var container = PocketContainer.Build(options, ContainerName, args, options.StoragePort);
        container.Resources = new V1ResourceRequirements { Requests = requests, Limits = limits };
        container.VolumeMounts = isDram ? null : [new V1VolumeMount { Name = VolumeName, MountPath = options.DataPath }];

        var pod = new V1Pod
        {
            ApiVersion = "v1",
            Kind = "Pod",
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = options.Namespace,
                Labels = labels,
                Annotations = new Dictionary<string, string> { [KubernetesProvisioner.CapacityAnnotation] = request.CapacityBytes.ToString(CultureInfo.InvariantCulture) },
            },
            Spec = new V1PodSpec
            {
                Containers = [container],

                // A restarted node would come back empty under a new id while the metadata server still counts the
                // old one's blocks; the controller replaces failed nodes instead.
                RestartPolicy = "Never",

                // Storage nodes never call the Kubernetes API, and service links would add POCKET_* variables of
                // their own for a Service named pocket-*.
                AutomountServiceAccountToken = false,
                EnableServiceLinks = false,
                TerminationGracePeriodSeconds = (long)options.DeleteGracePeriod.TotalSeconds,
                NodeSelector = nodeSelector.Count == 0 ? null : nodeSelector,
                SecurityContext = options.FsGroup is { } fsGroup ? new V1PodSecurityContext { FsGroup = fsGroup } : null,
                Volumes = isDram ? null : [Volume(tier, volumeBytes)],
            },
        };
        options.CustomizePod?.Invoke(pod);
        return pod;
    }

    private static V1Volume Volume(TierPodOptions tier, long bytes) => tier.Volume switch
    {
        StorageVolumeKind.EmptyDir => new V1Volume { Name = VolumeName, EmptyDir = new V1EmptyDirVolumeSource { SizeLimit = Quantity(bytes) } },
        StorageVolumeKind.EphemeralVolumeClaim => new V1Volume
        {
            Name = VolumeName,
            Ephemeral = new V1EphemeralVolumeSource
            {
                // A claim made for this pod and deleted with it: the data is as ephemeral as the node.
                VolumeClaimTemplate = new V1PersistentVolumeClaimTemplate
                {
                    Metadata = new V1ObjectMeta { Labels = new Dictionary<string, string> { [KubernetesProvisioner.NameLabel] = "pocket", [KubernetesProvisioner.RoleLabel] = "storage" } },
                    Spec = new V1PersistentVolumeClaimSpec
                    {
                        AccessModes = ["ReadWriteOnce"],
                        StorageClassName = tier.StorageClassName,
                        Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = Quantity(bytes) } },
                    },
                },
            },
        },
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier.Volume, "unknown volume kind"),
    };

    /// <summary>Bytes as a quantity, in the largest binary unit that divides them exactly, so kubectl shows 1Gi, not 1073741824.</summary>
    public static ResourceQuantity Quantity(long bytes)
    {
        ReadOnlySpan<(string Suffix, int Shift)> units = [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
        foreach (var (suffix, shift) in units)
        {
            if (bytes != 0 && bytes % (1L << shift) == 0)
            {
                return new ResourceQuantity(string.Create(CultureInfo.InvariantCulture, $"{bytes >> shift}{suffix}"));
            }
        }

        return new ResourceQuantity(bytes.ToString(CultureInfo.InvariantCulture));
    }
}
