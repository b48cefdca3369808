using Microsoft.Extensions.Logging;
using Pocket.Metadata.Placement;
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

    /// <summary>Places <paramref name="bytes"/> for a job over the live nodes (<see cref="ExtentAllocator.Allocate"/>); all or nothing.</summary>
    private Status Allocate(JobEntry job, long bytes, List<Extent> into, out string error) =>
        ExtentAllocator.Allocate(job, LiveNodes(), bytes, _options.StripeUnit, _options.HddExtent, Random.Shared, into, out error);

    /// <summary>The nodes placement may choose: live ones (not standby, draining, drained or dead).</summary>
    private List<NodeEntry> LiveNodes() => [.. _nodes.Values.Where(n => n.State == NodeState.Live)];

    private void FreeExtents(IReadOnlyList<Extent> extents, int from = 0)
    {
        for (var i = from; i < extents.Count; i++)
        {
            var extent = extents[i];
            if (_nodes.TryGetValue(extent.NodeId, out var node) && node.State != NodeState.Dead)
            {
                ExtentAllocator.Free(node, extent);
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

    /// <summary>The first node holding part of the object that is dead (or no longer registered), if any, as "id (address)".</summary>
    private string? LostNode(ObjectEntry entry)
    {
        foreach (var extent in entry.Extents)
        {
            if (!_nodes.TryGetValue(extent.NodeId, out var node))
            {
                return $"{extent.NodeId} (no longer registered)";
            }

            if (node.State == NodeState.Dead)
            {
                return $"{node.Id} ({node.Address})";
            }
        }

        return null;
    }
}
