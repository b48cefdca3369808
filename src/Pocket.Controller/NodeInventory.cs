using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Protocol;

namespace Pocket.Controller;

/// <summary>
/// Which storage nodes this controller started, claimed or adopted, and so may drain and stop; and where idle
/// warm-pool nodes are claimed from. The registry, the warm pool and the autoscaler all ask here instead of holding
/// references to each other: a registration records the nodes it started or claimed once they serve, the autoscaler
/// records the nodes it adds and picks the ones to remove from here.
/// </summary>
internal sealed class NodeInventory(WarmPool? pool)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, ProvisionedNode> _owned = [];

    /// <summary>The warm pool, when the controller keeps one.</summary>
    public WarmPool? Pool { get; } = pool;

    /// <summary>Records a node the controller may drain and stop (it started it, claimed it from the pool or was handed it).</summary>
    public void Own(ProvisionedNode node)
    {
        if (node.NodeId is { } id)
        {
            lock (_lock)
            {
                _owned[id] = node;
            }
        }
    }

    /// <summary>The node recorded under <paramref name="nodeId"/>, if the controller may stop it.</summary>
    public bool TryGetOwned(uint nodeId, out ProvisionedNode node)
    {
        lock (_lock)
        {
            return _owned.TryGetValue(nodeId, out node!);
        }
    }

    /// <summary>Whether the controller may stop <paramref name="nodeId"/>.</summary>
    public bool Owns(uint nodeId)
    {
        lock (_lock)
        {
            return _owned.ContainsKey(nodeId);
        }
    }

    /// <summary>The ids of every node the controller may stop.</summary>
    public HashSet<uint> OwnedIds()
    {
        lock (_lock)
        {
            return [.. _owned.Keys];
        }
    }

    /// <summary>Forgets a node once it is stopped.</summary>
    public void Release(uint nodeId)
    {
        lock (_lock)
        {
            _owned.Remove(nodeId);
        }
    }

    /// <summary>Claims and activates an idle pooled node of <paramref name="tier"/>; null when there is no pool or it is empty.</summary>
    public Task<ProvisionedNode?> TryClaimPooledAsync(NodeTier tier, CancellationToken cancellationToken) =>
        Pool is { } warm ? warm.TryClaimAsync(tier, cancellationToken) : Task.FromResult<ProvisionedNode?>(null);
}
