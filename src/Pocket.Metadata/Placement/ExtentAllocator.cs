using Pocket.Protocol;

namespace Pocket.Metadata.Placement;

/// <summary>
/// The one extent-allocation loop: new objects (Create, Allocate) and a drain's copies both take their extents here,
/// each with a fresh generation of its node. The caller holds the metadata lock.
/// </summary>
internal static class ExtentAllocator
{
    /// <summary>
    /// Places <paramref name="bytes"/> for a job over <paramref name="live"/> nodes, one stripe unit at a time
    /// (<see cref="PlacementPolicy.Choose"/>); a disk node takes up to <paramref name="hddExtent"/> bytes at once when it
    /// has room. All or nothing: on failure the extents added to <paramref name="into"/> are freed and removed again.
    /// </summary>
    public static Status Allocate(JobEntry job, List<NodeEntry> live, long bytes, int stripeUnit, int hddExtent, Random random, List<Extent> into, out string error)
    {
        error = string.Empty;
        if (live.Count == 0)
        {
            error = "no live storage nodes";
            return Status.NoNodes;
        }

        var start = into.Count;
        var remaining = bytes;
        while (remaining > 0)
        {
            var unit = (int)Math.Min(remaining, stripeUnit);
            if (PlacementPolicy.Choose(job, live, unit, random) is not { } node)
            {
                for (var i = start; i < into.Count; i++)
                {
                    Free(live.Find(n => n.Id == into[i].NodeId)!, into[i]);
                }

                into.RemoveRange(start, into.Count - start);
                var free = live.Sum(n => n.FreeBytes);
                error = $"capacity exceeded: {bytes} bytes asked for, {free} bytes free on {live.Count} live nodes across every tier";
                return Status.CapacityExceeded;
            }

            // A disk node takes several stripe units in one contiguous run when it has room for them.
            if (node.Tier == NodeTier.Hdd && remaining > unit)
            {
                var run = (int)Math.Min(remaining, hddExtent);
                if (PlacementPolicy.HasRoom(node, run))
                {
                    unit = run;
                }
            }

            AllocateOn(node, unit, into);
            remaining -= unit;
        }

        return Status.Ok;
    }

    /// <summary>
    /// Takes <paramref name="bytes"/> on one node that has room for them (<see cref="PlacementPolicy.HasRoom"/>): as few
    /// runs of contiguous blocks as the node's free space allows, each an extent with a new generation.
    /// </summary>
    public static void AllocateOn(NodeEntry node, int bytes, List<Extent> into)
    {
        var left = bytes;
        while (left > 0)
        {
            var (first, count) = node.Allocator.AllocateRun((left + node.BlockSize - 1) / node.BlockSize);
            var length = (int)Math.Min(left, count * node.BlockSize);
            into.Add(new Extent(node.Id, node.NextGeneration++, first * node.BlockSize, length, node.Tier));
            left -= length;
        }
    }

    /// <summary>Gives an extent's blocks back to its node.</summary>
    public static void Free(NodeEntry node, Extent extent) =>
        node.Allocator.Free(extent.Offset / node.BlockSize, (extent.Length + node.BlockSize - 1) / node.BlockSize);
}
