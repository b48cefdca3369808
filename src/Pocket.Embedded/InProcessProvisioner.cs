using System.Globalization;
using Pocket.Controller.Provisioning;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Controller;

/// <summary>
/// Starts storage nodes inside this process, in a <see cref="PocketCluster"/>: for tests and
/// <c>pocket up --in-process</c>. Nodes of every tier get their tier's device (ssd and hdd files in the cluster's
/// data directory).
/// </summary>
public sealed class InProcessProvisioner : IStorageProvisioner
{
    private readonly PocketCluster _cluster;

    // PocketCluster's node list is not thread-safe, and the controller may start several nodes at once.
    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>Provisions nodes of <paramref name="tiers"/> (default: dram only) in <paramref name="cluster"/>.</summary>
    public InProcessProvisioner(PocketCluster cluster, IReadOnlyCollection<NodeTier>? tiers = null)
    {
        _cluster = cluster;
        Tiers = tiers ?? [NodeTier.Dram];
    }

    /// <inheritdoc />
    public IReadOnlyCollection<NodeTier> Tiers { get; }

    /// <inheritdoc />
    public async Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken)
    {
        if (!Tiers.Contains(request.Tier))
        {
            throw new ProvisioningException($"this in-process provisioner starts {string.Join(", ", Tiers.Select(NodeTierNames.Name))} nodes, not {request.Tier.Name()}");
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // AddNodeAsync returns once the node has registered, so the id is known here.
            var index = await _cluster.AddNodeAsync(request.CapacityBytes, cancellationToken: cancellationToken, tier: request.Tier, standby: request.Standby).ConfigureAwait(false);
            var node = _cluster.Nodes[index]!;
            return new ProvisionedNode(request.Tier, index.ToString(CultureInfo.InvariantCulture), node.NodeId, $"{node.EndPoint.Address}:{node.EndPoint.Port}");
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new ProvisioningException($"in-process storage node did not start: {ex.Message}", ex);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <inheritdoc />
    public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        if (!int.TryParse(node.Handle, NumberStyles.None, CultureInfo.InvariantCulture, out var index) || index >= _cluster.Nodes.Count)
        {
            throw new ArgumentException($"'{node.Handle}' is not a node of this in-process cluster", nameof(node));
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _cluster.StopNodeAsync(index).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }
}
