using Microsoft.Extensions.Logging;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    private void HandleRegisterNode(FrameContext frame)
    {
        if (!RegisterNodeRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "register-node");
            return;
        }

        var (tier, host, port, capacity, blockSize, flags) = (request.Tier, request.Host, request.Port, request.Capacity, request.BlockSize, request.Flags);
        var secret = request.Secret.ToArray();

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if ((flags & ~RegisterNodeRequest.StandbyFlag) != 0)
        {
            frame.ReplyError(Status.BadRequest, $"register-node flags 0x{flags:x2} has unknown bits (only 0x01, standby, is defined)");
            return;
        }

        if (!Enum.IsDefined(tier) || host.Length == 0 || port == 0 || capacity <= 0 || blockSize < 4096 || (blockSize & (blockSize - 1)) != 0)
        {
            frame.ReplyError(Status.BadRequest, "register-node needs a known tier, a host, a port, a positive capacity and a power-of-two block size of at least 4096");
            return;
        }

        NodeEntry node;
        lock (_lock)
        {
            node = new NodeEntry
            {
                Id = ++_nextNodeId,
                Tier = tier,
                Host = host,
                Port = port,
                Capacity = capacity,
                BlockSize = blockSize,
                Secret = secret,
                Allocator = new BlockAllocator(capacity / blockSize),
                ConnectionId = frame.ConnectionId,
                LastHeartbeat = _options.TimeProvider.GetTimestamp(),
                State = request.Standby ? NodeState.Standby : NodeState.Live,
            };
            _nodes[node.Id] = node;
        }

        MetadataLog.NodeRegistered(_logger, node.Id, node.Address, tier.ToString(), capacity);
        Span<byte> reply = stackalloc byte[RegisterNodeReply.Size];
        RegisterNodeReply.Write(reply, node.Id);
        frame.Reply(Status.Ok, reply);
    }

    /// <summary>ActivateNode (<see cref="ActivateNodeRequest"/>): a standby node becomes live; activating a live node is a no-op.</summary>
    private void HandleActivateNode(FrameContext frame)
    {
        if (!ActivateNodeRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "activate-node");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        lock (_lock)
        {
            if (!_nodes.TryGetValue(id, out var node) || node.State is not (NodeState.Standby or NodeState.Live))
            {
                var state = node is null ? "not registered" : node.State.ToString().ToLowerInvariant();
                frame.ReplyError(Status.NotFound, $"node {id} is not a standby node ({state})");
                return;
            }

            node.State = NodeState.Live;
        }

        frame.Reply(Status.Ok);
    }

    private void HandleHeartbeat(FrameContext frame)
    {
        if (!HeartbeatRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "heartbeat");
            return;
        }

        var (id, cpu, rx, tx, _) = request;

        lock (_lock)
        {
            if (!_nodes.TryGetValue(id, out var node) || node.State == NodeState.Dead || node.ConnectionId != frame.ConnectionId)
            {
                frame.ReplyError(Status.NotFound, $"node {id} is not registered (or was declared dead)");
                return;
            }

            node.LastHeartbeat = _options.TimeProvider.GetTimestamp();
            node.Cpu = cpu;
            node.NetRx = rx;
            node.NetTx = tx;
        }

        frame.Reply(Status.Ok);
    }

    private void HandleListNodes(FrameContext frame)
    {
        NodeRecord[] nodes;
        lock (_lock)
        {
            // Node addresses and load are for the cluster's own parts and its jobs, not for anyone who can connect.
            if (!IsAdmin(frame, out _) && !_jobsByToken.ContainsKey(frame.Header.Token))
            {
                frame.ReplyError(Status.Unauthorized, "listing nodes needs a job token or the cluster token");
                return;
            }

            nodes = [.. _nodes.Values.Select(ToRecord)];
        }

        var body = new BodyWriter(1024);
        ListNodesReply.Write(body, nodes);
        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    private static NodeRecord ToRecord(NodeEntry node) =>
        new(node.Id, node.Tier, node.State, node.Host, (ushort)node.Port, node.Capacity, node.State == NodeState.Dead ? 0 : node.UsedBytes, node.Cpu, node.NetRx, node.NetTx, node.MovedBytes);

    private void CheckLiveness()
    {
        var died = new List<(uint, string)>();
        lock (_lock)
        {
            var now = _options.TimeProvider.GetTimestamp();
            foreach (var node in _nodes.Values.ToList())
            {
                if (node.State == NodeState.Drained && _options.TimeProvider.GetElapsedTime(node.LastHeartbeat, now) > _options.NodeTimeout)
                {
                    _nodes.Remove(node.Id);
                    MetadataLog.NodeRemoved(_logger, node.Id);
                }
                else if (node.State != NodeState.Dead && _options.TimeProvider.GetElapsedTime(node.LastHeartbeat, now) > _options.NodeTimeout)
                {
                    node.State = NodeState.Dead;
                    died.Add((node.Id, $"no heartbeat for {_options.NodeTimeout.TotalSeconds:0.#} s"));
                }
            }
        }

        foreach (var (id, reason) in died)
        {
            MetadataLog.NodeDead(_logger, id, reason);
            NodeDied?.Invoke(id, reason);
        }
    }

    /// <summary>
    /// Places <paramref name="bytes"/> for a job: each stripe unit goes to a node drawn by the job's weights among
    /// live nodes with room; when those are full it spills to the job's tier's other nodes, then to slower tiers
    /// (dram, ssd, hdd), then to faster ones. All or nothing: on failure nothing stays allocated.
    /// </summary>
    private Status Allocate(JobEntry job, long bytes, List<Extent> into, out string error)
    {
        error = string.Empty;
        var start = into.Count;
        var live = _nodes.Values.Where(n => n.State == NodeState.Live).ToList();
        if (live.Count == 0)
        {
            error = "no live storage nodes";
            return Status.NoNodes;
        }

        var remaining = bytes;
        while (remaining > 0)
        {
            var unit = (int)Math.Min(remaining, _options.StripeUnit);
            if (ChooseNode(job, live, unit) is not { } node)
            {
                FreeExtents(into, start);
                into.RemoveRange(start, into.Count - start);
                var free = live.Sum(n => n.FreeBytes);
                error = $"capacity exceeded: {bytes} bytes asked for, {free} bytes free on {live.Count} live nodes across every tier";
                return Status.CapacityExceeded;
            }

            // A disk node takes several stripe units in one contiguous run when it has room for them.
            if (node.Tier == NodeTier.Hdd && remaining > unit)
            {
                var run = (int)Math.Min(remaining, _options.HddExtent);
                if (node.Allocator.FreeBlocks >= (run + node.BlockSize - 1) / node.BlockSize)
                {
                    unit = run;
                }
            }

            var left = unit;
            while (left > 0)
            {
                var (first, count) = node.Allocator.AllocateRun((left + node.BlockSize - 1) / node.BlockSize);
                var length = (int)Math.Min(left, count * node.BlockSize);
                into.Add(new Extent(node.Id, node.NextGeneration++, first * node.BlockSize, length, node.Tier));
                left -= length;
            }

            remaining -= unit;
        }

        return Status.Ok;
    }

    private static NodeEntry? ChooseNode(JobEntry job, List<NodeEntry> live, int unit)
    {
        bool HasRoom(NodeEntry n) => n.Allocator.FreeBlocks >= (unit + n.BlockSize - 1) / n.BlockSize;

        var weighted = live.Where(n => Weight(job, n) > 0 && HasRoom(n)).ToList();
        if (weighted.Count > 0)
        {
            return PickWeighted(job, weighted);
        }

        // Spill: the emptiest node of the first tier in spill order that has room.
        foreach (var tier in SpillOrder(job.Tier))
        {
            NodeEntry? best = null;
            foreach (var node in live)
            {
                if (node.Tier == tier && HasRoom(node) && (best is null || node.Allocator.FreeBlocks > best.Allocator.FreeBlocks))
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

    /// <summary>The job's tier, then slower tiers, then faster ones.</summary>
    internal static IEnumerable<NodeTier> SpillOrder(NodeTier tier)
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

    private static NodeEntry PickWeighted(JobEntry job, List<NodeEntry> nodes)
    {
        if (nodes.Count == 1)
        {
            return nodes[0];
        }

        var total = 0.0;
        foreach (var node in nodes)
        {
            total += Weight(job, node);
        }

        var pick = Random.Shared.NextDouble() * total;
        foreach (var node in nodes)
        {
            pick -= Weight(job, node);
            if (pick < 0)
            {
                return node;
            }
        }

        return nodes[^1];
    }

    /// <summary>Without a weight map every node of the job's tier counts the same; with one, nodes left out of it get nothing.</summary>
    private static double Weight(JobEntry job, NodeEntry node) =>
        job.Weights.Count == 0 ? (node.Tier == job.Tier ? 1.0 : 0.0) : job.Weights.GetValueOrDefault(node.Id);

    private void FreeExtents(IReadOnlyList<Extent> extents, int from = 0)
    {
        for (var i = from; i < extents.Count; i++)
        {
            var extent = extents[i];
            if (_nodes.TryGetValue(extent.NodeId, out var node) && node.State != NodeState.Dead)
            {
                var first = extent.Offset / node.BlockSize;
                var count = (extent.Length + node.BlockSize - 1) / node.BlockSize;
                node.Allocator.Free(first, count);
            }
        }
    }

    private void WriteGrants(BodyWriter body, IReadOnlyList<Extent> extents, GrantRights rights)
    {
        GrantList.WriteCount(body, extents.Count);

        // Indexed, not foreach: an enumerator over the interface is an allocation on every get of a large object.
        for (var i = 0; i < extents.Count; i++)
        {
            var extent = extents[i];
            var secret = _nodes.TryGetValue(extent.NodeId, out var node) ? node.Secret : [];
            GrantList.WriteGrant(body, ExtentGrant.Sign(secret, extent.NodeId, extent.Generation, extent.Offset, extent.Length, rights));
        }
    }

    /// <summary>The first dead node holding part of the object, if any.</summary>
    private NodeEntry? LostNode(ObjectEntry entry)
    {
        foreach (var extent in entry.Extents)
        {
            if (!_nodes.TryGetValue(extent.NodeId, out var node) || node.State == NodeState.Dead)
            {
                return node ?? new NodeEntry { Id = extent.NodeId, Tier = NodeTier.Dram, Host = "?", Port = 0, Capacity = 0, BlockSize = 4096, Secret = [], Allocator = new BlockAllocator(0), ConnectionId = 0 };
            }
        }

        return null;
    }
}
