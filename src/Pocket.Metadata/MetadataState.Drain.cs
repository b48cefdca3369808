using Pocket.Metadata.Nodes;
using Pocket.Metadata.Placement;
using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>One extent a drain must move: the object holding it, by job and key.</summary>
internal readonly record struct DrainWork(JobEntry Job, string Key, Extent Extent);

/// <summary>
/// What a drain pass found: <see cref="Finished"/> when the node is drained (or no longer draining), else the extents to
/// move now; an empty list with <see cref="Finished"/> false means the drain waits for open writes or reads to end.
/// </summary>
internal readonly record struct DrainPass(bool Finished, List<DrainWork> Work);

/// <summary>The state's side of a drain (<see cref="Drain.DrainCoordinator"/> moves the bytes between these steps).</summary>
internal sealed partial class MetadataState
{
    /// <summary>Starts draining a node: no new blocks go to it from now on.</summary>
    public Result<DrainStart> BeginDrain(uint nodeId)
    {
        lock (_lock)
        {
            return Nodes.BeginDrain(nodeId);
        }
    }

    /// <summary>
    /// The extents still on a draining node. When there are none and no open handle holds one, the node is marked
    /// drained (the extents kept for old grants are freed) and the pass is finished.
    /// </summary>
    public DrainPass NextDrainPass(uint nodeId)
    {
        var work = new List<DrainWork>();
        lock (_lock)
        {
            if (!Nodes.TryGet(nodeId, out var node) || node.State != NodeState.Draining)
            {
                return new DrainPass(true, work);
            }

            // Ended jobs' keep-after-job objects live on until their TTL, so they move too.
            foreach (var job in _jobsById.Values.Concat(_retiredJobs))
            {
                foreach (var entry in job.Objects.Values)
                {
                    foreach (var extent in entry.Extents)
                    {
                        // An extent of a dead record of the same id is lost, not moved.
                        if (node.Owns(extent))
                        {
                            work.Add(new DrainWork(job, entry.Key, extent));
                        }
                    }
                }
            }

            // Open writes commit on this node and are moved on the next pass; delete-after-read handles keep their
            // extents until the reader is done, so both hold the node up.
            var waiting = _handles.Values.Any(h => h.Extents.Any(e => node.Owns(e)));
            if (work.Count == 0 && !waiting)
            {
                Nodes.MarkDrained(node);
                return new DrainPass(true, work);
            }

            return new DrainPass(false, work);
        }
    }

    /// <summary>
    /// Space for a copy of <paramref name="work"/>'s extent on a node chosen like a new block of its job, or null when
    /// the extent no longer needs moving or no live node has room (then a later pass tries again).
    /// </summary>
    public List<Extent>? ReserveCopy(uint sourceId, in DrainWork work)
    {
        lock (_lock)
        {
            if (!IsDraining(sourceId) || !StillHolds(work))
            {
                return null;
            }

            if (PlacementPolicy.Choose(work.Job, Nodes.Live(), work.Extent.Length, _random) is not { } target)
            {
                MetadataLog.DrainStalled(_logger, sourceId, work.Key, work.Extent.Length);
                return null;
            }

            var copies = new List<Extent>();
            ExtentAllocator.AllocateOn(target, work.Extent.Length, copies);
            return copies;
        }
    }

    /// <summary>
    /// Switches the object to its copies once their bytes are written. False when the object was deleted (or its job
    /// ended) while the bytes were in flight, or the drain stopped: then the copies are garbage for the caller to free.
    /// The old extent stays allocated, readable through grants from before the switch, until the node is drained.
    /// </summary>
    public bool SwitchToCopies(uint sourceId, in DrainWork work, List<Extent> copies)
    {
        lock (_lock)
        {
            if (!IsDraining(sourceId) || !StillHolds(work) || !Nodes.TryGet(sourceId, out var source))
            {
                return false;
            }

            var (job, key, old) = work;
            var entry = job.Objects[key];
            var extents = new List<Extent>(entry.Extents.Length + copies.Count - 1);
            foreach (var extent in entry.Extents)
            {
                if (extent == old)
                {
                    extents.AddRange(copies);
                }
                else
                {
                    extents.Add(extent);
                }
            }

            var moved = new ObjectEntry { Key = entry.Key, Size = entry.Size, Extents = [.. extents], Flags = entry.Flags };
            job.Objects[key] = moved;
            job.Keys.Set(moved);
            job.TierBytes[(int)old.Tier] -= old.Length;
            foreach (var copy in copies)
            {
                job.TierBytes[(int)copy.Tier] += copy.Length;
            }

            Nodes.Seal(copies);
            source.Retired.Add(old);
            source.MovedBytes += old.Length;
            return true;
        }
    }

    /// <summary>How many seals and forgets were ever queued for storage nodes.</summary>
    public long RevocationsQueued
    {
        get
        {
            lock (_lock)
            {
                return Nodes.RevocationsQueued;
            }
        }
    }

    /// <summary>Takes the queued seals and forgets (the caller sends them) and the count queued up to now.</summary>
    public (List<PendingRevocation> Revocations, long Queued) TakeRevocations()
    {
        lock (_lock)
        {
            return Nodes.TakeRevocations();
        }
    }

    /// <summary>Gives back the space of copies that were not switched to.</summary>
    public void FreeCopies(List<Extent> copies)
    {
        lock (_lock)
        {
            Nodes.FreeExtents(copies);
        }
    }

    /// <summary>Where a node that is not dead listens, for the drain's connections to it.</summary>
    public (string Host, int Port)? AddressOf(uint nodeId)
    {
        lock (_lock)
        {
            return Nodes.TryGet(nodeId, out var node) && node.State != NodeState.Dead ? (node.Host, node.Port) : null;
        }
    }

    private bool IsDraining(uint nodeId) => Nodes.TryGet(nodeId, out var node) && node.State == NodeState.Draining;

    private bool StillHolds(in DrainWork work) =>
        ((_jobsById.TryGetValue(work.Job.Id, out var current) && current == work.Job) || _retiredJobs.Contains(work.Job))
        && work.Job.Objects.TryGetValue(work.Key, out var entry) && Array.IndexOf(entry.Extents, work.Extent) >= 0;
}
