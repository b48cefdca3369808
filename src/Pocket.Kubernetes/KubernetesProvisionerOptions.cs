using k8s.Models;
using Pocket.Protocol;

namespace Pocket.Kubernetes;

/// <summary>Where an ssd or hdd storage pod keeps its block file.</summary>
public enum StorageVolumeKind
{
    /// <summary>
    /// An <c>emptyDir</c> on the Kubernetes node's own disk, limited to the node's capacity: no storage class needed,
    /// and the data is gone with the pod, which is what ephemeral storage wants.
    /// </summary>
    EmptyDir,

    /// <summary>
    /// A generic ephemeral volume: a PersistentVolumeClaim made from a template for the pod and deleted with it, of
    /// the node's capacity, from <see cref="TierPodOptions.StorageClassName"/>. For clusters whose flash or disks
    /// are offered only as a storage class (cloud volumes, local-path provisioners).
    /// </summary>
    EphemeralVolumeClaim,
}

/// <summary>How the pods of one tier are sized and placed.</summary>
public sealed record TierPodOptions
{
    /// <summary>Whether the provisioner starts nodes of this tier at all.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>
    /// Memory beyond the node's capacity: the runtime, connection buffers and the block index. A DRAM pod asks for
    /// capacity + this (request = limit, so the scheduler reserves all of it and the node is never OOM-killed for
    /// holding what it was sized for); an ssd or hdd pod asks for this alone.
    /// </summary>
    public long MemoryOverheadBytes { get; init; } = 256L << 20;

    /// <summary>CPU request (a Kubernetes quantity). No CPU limit by default: a throttled storage node stalls every reader.</summary>
    public string CpuRequest { get; init; } = "1";

    /// <summary>CPU limit (a Kubernetes quantity), or null for none.</summary>
    public string? CpuLimit { get; init; }

    /// <summary>Where ssd and hdd pods keep their file; ignored for DRAM.</summary>
    public StorageVolumeKind Volume { get; init; } = StorageVolumeKind.EmptyDir;

    /// <summary>
    /// Bytes of volume beyond the capacity: the block file is exactly the capacity, and a file system needs a little
    /// room of its own around it. Ignored for DRAM.
    /// </summary>
    public long DiskOverheadBytes { get; init; } = 64L << 20;

    /// <summary>Storage class of <see cref="StorageVolumeKind.EphemeralVolumeClaim"/> volumes; null uses the cluster's default class.</summary>
    public string? StorageClassName { get; init; }

    /// <summary>Node labels this tier's pods must land on (e.g. machines with NVMe), on top of <see cref="KubernetesProvisionerOptions.NodeSelector"/>.</summary>
    public IReadOnlyDictionary<string, string> NodeSelector { get; init; } = new Dictionary<string, string>();

    internal void Validate(NodeTier tier)
    {
        var name = tier.Name();
        if (MemoryOverheadBytes < 0 || DiskOverheadBytes < 0)
        {
            throw new ArgumentException($"{name}: memory and disk overheads must not be negative");
        }

        if (!TryQuantity(CpuRequest))
        {
            throw new ArgumentException($"{name}: cpu request '{CpuRequest}' is not a Kubernetes quantity (e.g. 500m, 1, 2)");
        }

        if (CpuLimit is not null && !TryQuantity(CpuLimit))
        {
            throw new ArgumentException($"{name}: cpu limit '{CpuLimit}' is not a Kubernetes quantity (e.g. 500m, 1, 2)");
        }

        if (StorageClassName is { } storageClass && !KubernetesNames.IsSubdomain(storageClass))
        {
            throw new ArgumentException($"{name}: storage class '{storageClass}' is not a Kubernetes name");
        }

        KubernetesNames.ValidateLabels(NodeSelector, $"{name}: node selector");
    }

    internal static bool TryQuantity(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        try
        {
            // The library's own parser, so what passes here is what the API server would accept.
            _ = new ResourceQuantity(text).ToDecimal();
            return true;
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException or OverflowException)
        {
            return false;
        }
    }
}

/// <summary>Settings of <see cref="KubernetesProvisioner"/>.</summary>
public sealed record KubernetesProvisionerOptions
{
    /// <summary>The container port every storage pod listens on; fixed because each pod has its own IP.</summary>
    public const int DefaultStoragePort = 7100;

    /// <summary>The container port of a storage pod's Prometheus metrics (the port the metadata server's pod uses too).</summary>
    public const int DefaultMetricsPort = 9464;

    /// <summary>The container port every metadata server pod of the plane's StatefulSet listens on.</summary>
    public const int DefaultMetadataPort = 7000;

    /// <summary>
    /// Name of the metadata plane's headless Service, and the prefix of its pods' names (<see cref="MetadataPlaneSpec"/>):
    /// server i is pod <c>NAME-i</c>, reachable at <c>NAME-i.NAME.NAMESPACE.svc:PORT</c> whichever pod serves it.
    /// </summary>
    public string MetadataSetName { get; init; } = "pocket-metadata-plane";

    /// <summary>Port of each metadata server pod of the plane.</summary>
    public int MetadataPort { get; init; } = DefaultMetadataPort;

    /// <summary>
    /// The most metadata servers the plane may grow to (`pocket controller --metadata-max`): servers 0 to max-1, whose
    /// addresses storage pods are given when <see cref="MetadataAddress"/> is null.
    /// </summary>
    public int MaxMetadataServers { get; init; } = DefaultMaxMetadataServers;

    /// <summary>The default of <see cref="MaxMetadataServers"/>.</summary>
    public const int DefaultMaxMetadataServers = 16;

    /// <summary>CPU request of each metadata server pod (as deploy/kubernetes/02-metadata.yaml asks for its server).</summary>
    public string MetadataCpuRequest { get; init; } = "1";

    /// <summary>Memory request of each metadata server pod: what the scheduler keeps for it.</summary>
    public string MetadataMemoryRequest { get; init; } = "1Gi";

    /// <summary>Memory limit of each metadata server pod (null: none); the server bounds its object memory below it (`--max-object-memory`).</summary>
    public string? MetadataMemoryLimit { get; init; } = "4Gi";

    /// <summary>
    /// Namespace the storage pods are created in. Null in <see cref="KubernetesProvisioner.Create"/> means the
    /// controller's own namespace when it runs in a pod, else the kubeconfig context's, else <c>default</c>.
    /// </summary>
    public string? Namespace { get; init; }

    /// <summary>The image holding the <c>pocket</c> executable (see deploy/Dockerfile), e.g. <c>pocket:latest</c>.</summary>
    public required string Image { get; init; }

    /// <summary>Kubernetes image pull policy: Always, IfNotPresent or Never.</summary>
    public string ImagePullPolicy { get; init; } = "IfNotPresent";

    /// <summary>The command that runs <c>pocket</c> in the image; the role's arguments follow it.</summary>
    public IReadOnlyList<string> Command { get; init; } = ["pocket"];

    /// <summary>
    /// host:port of the metadata server as pods see it, e.g. the Service <c>pocket-metadata:7070</c> (several,
    /// comma-separated), when the metadata plane runs elsewhere. Null: the provisioner runs the metadata plane itself
    /// (<see cref="KubernetesProvisioner.StartMetadataAsync"/>), and storage pods are given the address of every server
    /// it may start, <see cref="MaxMetadataServers"/> of them, so they join each one as it appears.
    /// </summary>
    public string? MetadataAddress { get; init; }

    /// <summary>The Secret holding the cluster token; pods read it into POCKET_CLUSTER_TOKEN, so it never appears in a pod spec.</summary>
    public string ClusterTokenSecretName { get; init; } = "pocket-cluster-token";

    /// <summary>The key of the token in <see cref="ClusterTokenSecretName"/>.</summary>
    public string ClusterTokenSecretKey { get; init; } = "token";

    /// <summary>Pod names are <c>{prefix}-{tier}-{random}</c>.</summary>
    public string PodNamePrefix { get; init; } = "pocket-storage";

    /// <summary>The port storage pods listen on (and the readiness probe checks).</summary>
    public int StoragePort { get; init; } = DefaultStoragePort;

    /// <summary>
    /// The port storage pods serve Prometheus metrics on (`--metrics-port`, a container port named <c>metrics</c> that
    /// the PodMonitor in deploy/kubernetes/monitoring scrapes); null: no metrics listener and no per-request metering.
    /// </summary>
    public int? MetricsPort { get; init; } = DefaultMetricsPort;

    /// <summary>Allocation unit passed to the nodes (--block-size); null leaves the storage role's default.</summary>
    public int? BlockSize { get; init; }

    /// <summary>Where ssd and hdd pods mount their volume (passed as --data-dir).</summary>
    public string DataPath { get; init; } = "/data";

    /// <summary>Labels added to every storage pod, beside the provisioner's own (which win on a clash).</summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = new Dictionary<string, string>();

    /// <summary>Node labels every storage pod must land on.</summary>
    public IReadOnlyDictionary<string, string> NodeSelector { get; init; } = new Dictionary<string, string>();

    /// <summary>DRAM pods.</summary>
    public TierPodOptions Dram { get; init; } = new();

    /// <summary>SSD pods.</summary>
    public TierPodOptions Ssd { get; init; } = new();

    /// <summary>HDD pods.</summary>
    public TierPodOptions Hdd { get; init; } = new();

    /// <summary>
    /// Group id given to mounted volumes, so the image's non-root user can write its block file on a claimed volume;
    /// 1654 is the <c>app</c> user of the .NET runtime images. Null leaves volumes as the storage class makes them.
    /// </summary>
    public long? FsGroup { get; init; } = 1654;

    /// <summary>Passes --verbose to the nodes, so their Information logs reach <c>kubectl logs</c>.</summary>
    public bool VerboseLogs { get; init; }

    /// <summary>How long a stopped pod has to exit after SIGTERM before it is killed (also its terminationGracePeriodSeconds).</summary>
    public TimeSpan DeleteGracePeriod { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Whether <see cref="KubernetesProvisioner.StartNodeAsync"/> waits for the pod to be ready (scheduled, image
    /// pulled, port open). Waiting turns an unschedulable or crashing pod into a clear error and an address, and
    /// deletes the pod, instead of leaving the controller to time out waiting for a registration that never comes.
    /// </summary>
    public bool WaitUntilReady { get; init; } = true;

    /// <summary>How long a pod may take to become ready (image pulls can be slow); the caller's cancellation can cut it shorter.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>How long one call to the API server may take before it counts as failed (for the metadata plane's calls).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often a starting pod's status is read.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>A last say over every pod before it is created (tolerations, affinity, priority class, annotations).</summary>
    public Action<V1Pod>? CustomizePod { get; init; }

    /// <summary>The clock of start timeouts and polls; tests pass a fake one.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>The pod settings of a tier.</summary>
    public TierPodOptions ForTier(NodeTier tier) => tier switch
    {
        NodeTier.Dram => Dram,
        NodeTier.Ssd => Ssd,
        NodeTier.Hdd => Hdd,
        _ => throw new ArgumentOutOfRangeException(nameof(tier), tier, "unknown tier"),
    };

    private static void MetadataQuantity(string what, string quantity)
    {
        if (!TierPodOptions.TryQuantity(quantity))
        {
            throw new ArgumentException($"metadata pods' {what} '{quantity}' is not a Kubernetes quantity (e.g. 500m, 1, 1Gi)");
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (Namespace is null || !KubernetesNames.IsLabel(Namespace))
        {
            throw new ArgumentException($"namespace '{Namespace}' is not a Kubernetes namespace name (lower-case letters, digits, '-', at most 63)");
        }

        if (string.IsNullOrWhiteSpace(Image) || Image.Any(char.IsWhiteSpace))
        {
            throw new ArgumentException($"image '{Image}' is not an image reference");
        }

        if (ImagePullPolicy is not ("Always" or "IfNotPresent" or "Never"))
        {
            throw new ArgumentException($"image pull policy '{ImagePullPolicy}' is not Always, IfNotPresent or Never");
        }

        if (Command is null || Command.Count == 0 || Command.Any(string.IsNullOrWhiteSpace))
        {
            throw new ArgumentException("command must name the pocket executable");
        }

        foreach (var address in MetadataAddress?.Split(',') ?? [])
        {
            var colon = address.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
            {
                throw new ArgumentException($"metadata address '{MetadataAddress}' is not host:port (several: comma-separated)");
            }
        }

        if (!KubernetesNames.IsSubdomain(ClusterTokenSecretName))
        {
            throw new ArgumentException($"cluster token secret '{ClusterTokenSecretName}' is not a Kubernetes name");
        }

        if (!KubernetesNames.IsLabel(MetadataSetName) || MetadataSetName.Length > 52)
        {
            throw new ArgumentException($"metadata set name '{MetadataSetName}' must be a DNS label of at most 52 characters (its pods add '-N')");
        }

        if (MetadataPort is <= 0 or > 65535 || MaxMetadataServers is < 1 or > 64)
        {
            throw new ArgumentException($"metadata port {MetadataPort} must be 1-65535 and max metadata servers {MaxMetadataServers} 1-64");
        }

        MetadataQuantity("cpu request", MetadataCpuRequest);
        MetadataQuantity("memory request", MetadataMemoryRequest);
        if (MetadataMemoryLimit is not null)
        {
            MetadataQuantity("memory limit", MetadataMemoryLimit);
        }

        if (!KubernetesNames.IsSecretKey(ClusterTokenSecretKey))
        {
            throw new ArgumentException($"cluster token secret key '{ClusterTokenSecretKey}' is not a Secret key");
        }

        // The prefix, the tier and an 8-character suffix must fit one DNS label, which pod names must be for their hostnames.
        if (!KubernetesNames.IsLabel(PodNamePrefix) || PodNamePrefix.Length > KubernetesNames.MaxPrefixLength)
        {
            throw new ArgumentException($"pod name prefix '{PodNamePrefix}' must be a DNS label of at most {KubernetesNames.MaxPrefixLength} characters");
        }

        if (StoragePort is <= 0 or > 65535)
        {
            throw new ArgumentException($"storage port {StoragePort} is not a port");
        }

        if (MetricsPort is { } metrics && (metrics is <= 0 or > 65535 || metrics == StoragePort))
        {
            throw new ArgumentException($"metrics port {metrics} is not a port other than the storage port {StoragePort}");
        }

        if (BlockSize is { } block && (block < 4096 || (block & (block - 1)) != 0))
        {
            throw new ArgumentException($"block size {block} is not a power of two of at least 4096");
        }

        if (string.IsNullOrEmpty(DataPath) || DataPath[0] != '/')
        {
            throw new ArgumentException($"data path '{DataPath}' is not an absolute path");
        }

        KubernetesNames.ValidateLabels(Labels, "labels");
        KubernetesNames.ValidateLabels(NodeSelector, "node selector");
        ArgumentNullException.ThrowIfNull(Dram);
        ArgumentNullException.ThrowIfNull(Ssd);
        ArgumentNullException.ThrowIfNull(Hdd);
        Dram.Validate(NodeTier.Dram);
        Ssd.Validate(NodeTier.Ssd);
        Hdd.Validate(NodeTier.Hdd);
        if (!Dram.Enabled && !Ssd.Enabled && !Hdd.Enabled)
        {
            throw new ArgumentException("at least one tier must be enabled");
        }

        if (DeleteGracePeriod < TimeSpan.Zero || DeleteGracePeriod > TimeSpan.FromHours(1))
        {
            throw new ArgumentException("delete grace period must be between 0 and 1 hour");
        }

        if (StartTimeout <= TimeSpan.Zero || PollInterval <= TimeSpan.Zero || RequestTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("start timeout, request timeout and poll interval must be positive");
        }

        ArgumentNullException.ThrowIfNull(TimeProvider);
    }
}
