using Pocket.Protocol;

namespace Pocket.Metadata.Placement;

/// <summary>
/// Which node takes the next stripe unit of a job: a draw by the job's weights among live nodes with room, and when
/// those are full a spill to the emptiest node of the job's tier, then of slower tiers (dram, ssd, hdd), then of
/// faster ones. Pure functions of the nodes' state: the caller holds the metadata lock.
/// </summary>
internal static class PlacementPolicy
{
    /// <summary>The node for <paramref name="unit"/> bytes of <paramref name="job"/>, or null when no live node has room.</summary>
    public static NodeEntry? Choose(JobEntry job, List<NodeEntry> live, int unit, Random random)
    {
        NodeEntry? only = null;
        var weighted = 0;
        var total = 0.0;
        foreach (var node in live)
        {
            var weight = Weight(job, node);
            if (weight > 0 && HasRoom(node, unit))
            {
                only = node;
                weighted++;
                total += weight;
            }
        }

        if (weighted == 1)
        {
            return only;
        }

        if (weighted > 1)
        {
            var pick = random.NextDouble() * total;
            foreach (var node in live)
            {
                var weight = Weight(job, node);
                if (weight > 0 && HasRoom(node, unit))
                {
                    pick -= weight;
                    if (pick < 0)
                    {
                        return node;
                    }
                }
            }

            return only;
        }

        // Spill: the emptiest node of the first tier in spill order that has room.
        foreach (var tier in SpillOrder(job.Tier))
        {
            NodeEntry? best = null;
            foreach (var node in live)
            {
                if (node.Tier == tier && HasRoom(node, unit) && (best is null || node.Allocator.FreeBlocks > best.Allocator.FreeBlocks))
                {
                    best = node;
                }
            }

            if (best is not null)
            {
                return best;
            }
        }

        return null;
    }

    /// <summary>Without a weight map every node of the job's tier counts the same; with one, nodes left out of it get nothing.</summary>
    public static double Weight(JobEntry job, NodeEntry node) =>
        job.Weights.Count == 0 ? (node.Tier == job.Tier ? 1.0 : 0.0) : job.Weights.GetValueOrDefault(node.Id);

    /// <summary>The job's tier, then slower tiers, then faster ones.</summary>
    public static IEnumerable<NodeTier> SpillOrder(NodeTier tier)
    {
        yield return tier;
        for (var t = tier + 1; t <= NodeTier.Hdd; t++)
        {
            yield return t;
        }

        for (var t = tier - 1; t >= NodeTier.Dram; t--)
        {
            yield return t;
        }
    }

    public static bool HasRoom(NodeEntry node, long bytes) => node.Allocator.FreeBlocks >= (bytes + node.BlockSize - 1) / node.BlockSize;
}
