using Pocket.Metadata.Placement;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

/// <summary>
/// What this server tells a node that serves several servers at each heartbeat (<see cref="HeartbeatReply"/>): what it
/// uses of its share, and the free space its jobs' reservations still want there. The node alone sees every server's
/// answer and moves free segments between them, so shares follow the jobs placed on each server.
/// </summary>
internal sealed partial class MetadataState
{
    /// <summary>How long one computation of every node's wanted bytes is reused (heartbeats of many nodes share it).</summary>
    private static readonly TimeSpan WantedReuse = TimeSpan.FromSeconds(1);

    private readonly Dictionary<uint, long> _wanted = [];
    private long _wantedAt = long.MinValue;

    /// <summary>Records a heartbeat; a shared node hears back what this server uses and wants of it.</summary>
    public Result<HeartbeatReply?> Heartbeat(in HeartbeatRequest beat, long connectionId)
    {
        lock (_lock)
        {
            var beaten = Nodes.Heartbeat(beat, connectionId);
            if (!beaten.IsOk)
            {
                return beaten;
            }

            if (!Nodes.TryGet(beat.NodeId, out var node) || node.Allocator.Share == BlockAllocator.AllSegments)
            {
                return (HeartbeatReply?)null;
            }

            return (HeartbeatReply?)new HeartbeatReply(node.UsedBytes, WantedOn(node));
        }
    }

    /// <summary>
    /// The part of this server's live jobs' reservations (their byte quota, from the controller's sizing) not yet used
    /// that falls on <paramref name="node"/>: each job's remainder spread over the live nodes of its tier by its weights
    /// (evenly without weights). Jobs without a byte quota want nothing beyond what they use. The caller holds the lock.
    /// </summary>
    private long WantedOn(NodeEntry node)
    {
        var now = _options.TimeProvider.GetTimestamp();
        if (_wantedAt == long.MinValue || _options.TimeProvider.GetElapsedTime(_wantedAt, now) >= WantedReuse)
        {
            _wantedAt = now;
            ComputeWanted();
        }

        return _wanted.GetValueOrDefault(node.Id);
    }

    private void ComputeWanted()
    {
        _wanted.Clear();
        var live = Nodes.Live();
        foreach (var job in _jobsById.Values)
        {
            var remaining = job.Quota.MaxBytes - job.UsedBytes;
            if (job.Quota.MaxBytes <= 0 || remaining <= 0)
            {
                continue;
            }

            double total = 0;
            foreach (var node in live)
            {
                total += ShareWeight(job, node);
            }

            if (total <= 0)
            {
                continue;
            }

            foreach (var node in live)
            {
                var weight = ShareWeight(job, node);
                if (weight > 0)
                {
                    _wanted[node.Id] = _wanted.GetValueOrDefault(node.Id) + (long)(remaining * (weight / total));
                }
            }
        }
    }

    /// <summary>
    /// Adds to <paramref name="into"/> (up to <paramref name="max"/> entries in all) the live nodes <paramref name="job"/>
    /// places blocks on: those of its tier with a weight above 0. For the address list of a reply (see
    /// <see cref="Pocket.Protocol.FrameFlags.NodeAddresses"/>): a client that learns them with its first reply needs no
    /// ListNodes when a later put or get reaches the job's other nodes.
    /// </summary>
    public void AddPlacementNodes(JobEntry job, List<uint> into, int max)
    {
        lock (_lock)
        {
            foreach (var node in Nodes.All)
            {
                if (into.Count >= max)
                {
                    return;
                }

                if (node.State == NodeState.Live && !node.Suspect && ShareWeight(job, node) > 0 && !into.Contains(node.Id))
                {
                    into.Add(node.Id);
                }
            }
        }
    }

    /// <summary>A node's weight for a job: its weight when the job has weights, else 1; 0 on another tier.</summary>
    private static double ShareWeight(JobEntry job, NodeEntry node) =>
        node.Tier != job.Tier ? 0 : job.Weights.Count == 0 ? 1 : Math.Max(0, job.Weights.GetValueOrDefault(node.Id));
}
