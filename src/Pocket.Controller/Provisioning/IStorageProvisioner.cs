using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>What the controller asks a provisioner for: one storage node of a tier, of a size.</summary>
/// <param name="Tier">The tier the node stores on.</param>
/// <param name="CapacityBytes">
/// Bytes the node should offer: the tier's node class capacity, which sizing assumed when it counted the nodes
/// to start (a Kubernetes provisioner turns it into the pod's memory or volume request).
/// </param>
/// <param name="Standby">
/// Start it as a warm-pool node: registered and heartbeating but given no blocks until the controller activates it.
/// </param>
public sealed record NodeRequest(NodeTier Tier, long CapacityBytes, bool Standby = false);

/// <summary>A node a provisioner started.</summary>
/// <param name="Tier">Its tier.</param>
/// <param name="Handle">The provisioner's own name for it (cluster index, process id, pod name), for stopping it.</param>
/// <param name="NodeId">Its metadata-server node id when the provisioner knows it; null when the node registers later by itself.</param>
/// <param name="Address">host:port it serves on, when known.</param>
public sealed record ProvisionedNode(NodeTier Tier, string Handle, uint? NodeId, string? Address)
{
    /// <summary>Where the node serves its Prometheus metrics, when the provisioner started it with a metrics listener.</summary>
    public Uri? MetricsUrl { get; init; }
}

/// <summary>
/// How the controller gets and gives back storage nodes: in this process (tests), as local child processes, or as
/// Kubernetes pods. A started node registers itself with the metadata server; <see cref="StartNodeAsync"/> may
/// return before it has (the controller waits for the registration, with a timeout), so a provisioner that only
/// creates a pod fits as well as one that waits.
/// </summary>
public interface IStorageProvisioner
{
    /// <summary>Tiers this provisioner can start nodes of.</summary>
    IReadOnlyCollection<NodeTier> Tiers { get; }

    /// <summary>Starts one storage node. Throws when the node cannot be started.</summary>
    Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken);

    /// <summary>Stops a node this provisioner started. Its data is gone; the caller drains it first.</summary>
    Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken);
}

/// <summary>The provisioner or the nodes it started failed, or did not register in time.</summary>
public sealed class ProvisioningException(string message, Exception? inner = null) : Exception(message, inner);
