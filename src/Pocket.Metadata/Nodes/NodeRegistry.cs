using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Pocket.Metadata.Placement;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata.Nodes;

/// <summary>A node declared dead, and why (raised as <see cref="MetadataServer.NodeDied"/> once the lock is released).</summary>
internal readonly record struct NodeDeath(uint NodeId, string Reason);

/// <summary>A seal or forget a node must hear (see <see cref="RevokeExtentsRequest"/>), queued under the lock and sent after it.</summary>
internal readonly record struct PendingRevocation(uint NodeId, Revocation Revocation);

/// <summary>What a drain request found the node doing.</summary>
internal enum DrainStart
{
    /// <summary>The node was live and is draining now: a copy must be started.</summary>
    Started,

    /// <summary>A drain already runs or has finished; a standby node (which never held a block) is drained at once.</summary>
    NothingToStart,
}

/// <summary>
/// The storage nodes this metadata server knows: their records, heartbeats and life cycle. A node registers live (or
/// standby, for a warm pool); a standby node is activated or drained at once; a live node is drained (no new blocks,
/// its blocks copied elsewhere) and then stops. A node whose heartbeats stop for the suspect time is suspect (out of
/// placement, its blocks unavailable to readers) and is itself again at its next heartbeat, its blocks intact; one
/// silent for the node timeout, or whose registration connection closes (its process ended), is dead, and a node that
/// comes back after that registers as a new, empty node: under a new id, or under its own proposed id (a node serving
/// several servers) as a new record whose generations start after the dead record's.
/// <para>
/// Not thread-safe: <see cref="MetadataState"/> calls it under the metadata lock. <see cref="SecretOf"/> is the one
/// exception: secrets never change after registration, so grants are signed outside the lock.
/// </para>
/// </summary>
internal sealed class NodeRegistry(TimeProvider time, TimeSpan suspectAfter, TimeSpan nodeTimeout, ILogger logger)
{
    private readonly Dictionary<uint, NodeEntry> _nodes = [];
    private readonly ConcurrentDictionary<uint, byte[]> _secrets = new();
    private readonly ConcurrentDictionary<uint, NodeAddress> _addresses = new();
    private List<PendingRevocation> _revocations = [];
    private uint _nextId;

    /// <summary>How many revocations were ever queued (a flush waits until its sender has sent this many).</summary>
    public long RevocationsQueued { get; private set; }

    public int Count => _nodes.Count;

    public IEnumerable<NodeEntry> All => _nodes.Values;

    /// <summary>
    /// Ids this server assigns stay below this; a node serving several servers proposes one at or above it (the same id
    /// with each), so an assigned id never takes a proposed one.
    /// </summary>
    public const uint FirstProposedId = 0x8000_0000;

    public Result<NodeEntry> Register(RegisterNodeRequest request, long connectionId)
    {
        uint id;
        uint firstGeneration = 1;
        if (request.NodeId != 0)
        {
            if (request.NodeId < FirstProposedId)
            {
                return Outcome.Fail(Status.BadRequest, $"a proposed node id must be at least {FirstProposedId} (0x{FirstProposedId:x8}); {request.NodeId} is not");
            }

            // A node this server declared dead may come back under its id (the other servers never stopped knowing it
            // by that id, and grants name it): it gets a new record whose generations start after the dead one's, so the
            // dead record's extents still report NodeLost and its grants and revocations never touch the new blocks.
            if (_nodes.TryGetValue(request.NodeId, out var known))
            {
                if (known.State != NodeState.Dead)
                {
                    return Outcome.Fail(Status.Exists, $"node id {request.NodeId} is registered and not dead; register with another");
                }

                firstGeneration = known.NextGeneration;
                MetadataLog.NodeReregistered(logger, request.NodeId, firstGeneration);
            }

            id = request.NodeId;
        }
        else
        {
            do
            {
                id = ++_nextId;
            }
            while (_nodes.ContainsKey(id));
        }

        var node = new NodeEntry
        {
            Id = id,
            Tier = request.Tier,
            Host = request.Host,
            Port = request.Port,
            RegisteredCapacity = request.Capacity,
            BlockSize = request.BlockSize,
            Secret = request.Secret.ToArray(),
            Allocator = new BlockAllocator(request.Capacity / request.BlockSize, request.Share),
            ConnectionId = connectionId,
            LastHeartbeat = time.GetTimestamp(),
            NextGeneration = firstGeneration,
            FirstGeneration = firstGeneration,
            State = request.Standby ? NodeState.Standby : NodeState.Live,
        };
        _nodes[node.Id] = node;
        _secrets[node.Id] = node.Secret;
        _addresses[node.Id] = new NodeAddress(node.Id, node.Host, (ushort)node.Port);
        return node;
    }

    /// <summary>Gives back up to <paramref name="count"/> segments of the node's share that hold no block (the node asked, over its own connection).</summary>
    public Result<ulong> ReleaseShare(uint id, int count, long connectionId)
    {
        if (!_nodes.TryGetValue(id, out var node) || node.State == NodeState.Dead || node.ConnectionId != connectionId)
        {
            return Outcome.Fail(Status.NotFound, $"node {id} is not registered on this connection");
        }

        var released = node.Allocator.Release(count);
        if (released != 0)
        {
            MetadataLog.ShareChanged(logger, id, "released", System.Numerics.BitOperations.PopCount(released), System.Numerics.BitOperations.PopCount(node.Allocator.Share));
        }

        return released;
    }

    /// <summary>Adds segments to the node's share (the node asked, over its own connection).</summary>
    public Outcome AddShare(uint id, ulong mask, long connectionId)
    {
        if (!_nodes.TryGetValue(id, out var node) || node.State == NodeState.Dead || node.ConnectionId != connectionId)
        {
            return Outcome.Fail(Status.NotFound, $"node {id} is not registered on this connection");
        }

        node.Allocator.Add(mask);
        MetadataLog.ShareChanged(logger, id, "added", System.Numerics.BitOperations.PopCount(mask), System.Numerics.BitOperations.PopCount(node.Allocator.Share));
        return Outcome.Ok;
    }

    public bool TryGet(uint id, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out NodeEntry node) => _nodes.TryGetValue(id, out node);

    /// <summary>The state of the node holding <paramref name="extent"/>: dead when no longer registered, or when the extent was the dead record's of a node registered again.</summary>
    public NodeState StateOf(in Extent extent) => _nodes.TryGetValue(extent.NodeId, out var node) && node.Owns(extent) ? node.State : NodeState.Dead;

    /// <summary>
    /// The key a grant for the node is signed with, or empty when the node is unknown (such a grant is refused by
    /// every node). Safe without the lock.
    /// </summary>
    public ReadOnlySpan<byte> SecretOf(uint id) => _secrets.TryGetValue(id, out var secret) ? secret : [];

    /// <summary>
    /// Where the node listens, for a reply that names its grants' nodes (<see cref="FrameFlags.NodeAddresses"/>); false
    /// when the node is unknown. Safe without the lock, like <see cref="SecretOf"/>: an id's address never changes.
    /// </summary>
    public bool TryGetAddress(uint id, out NodeAddress address) => _addresses.TryGetValue(id, out address);

    /// <summary>The nodes placement may choose: live ones (not standby, draining, drained or dead).</summary>
    public List<NodeEntry> Live()
    {
        var live = new List<NodeEntry>(_nodes.Count);
        foreach (var node in _nodes.Values)
        {
            if (node.State == NodeState.Live && !node.Suspect)
            {
                live.Add(node);
            }
        }

        return live;
    }

    /// <summary>A standby node becomes live; activating a live node is a no-op.</summary>
    public Outcome Activate(uint id)
    {
        if (!_nodes.TryGetValue(id, out var node) || node.State is not (NodeState.Standby or NodeState.Live))
        {
            var state = node is null ? "not registered" : node.State.ToString().ToLowerInvariant();
            return Outcome.Fail(Status.NotFound, $"node {id} is not a standby node ({state})");
        }

        node.State = NodeState.Live;
        return Outcome.Ok;
    }

    /// <summary>Records a heartbeat, which only the node's own registration connection may send.</summary>
    public Outcome Heartbeat(in HeartbeatRequest beat, long connectionId)
    {
        if (!_nodes.TryGetValue(beat.NodeId, out var node) || node.State == NodeState.Dead || node.ConnectionId != connectionId)
        {
            return Outcome.Fail(Status.NotFound, $"node {beat.NodeId} is not registered (or was declared dead)");
        }

        var now = time.GetTimestamp();
        if (node.Suspect)
        {
            node.Suspect = false;
            MetadataLog.NodeBack(logger, node.Id, time.GetElapsedTime(node.LastHeartbeat, now).TotalSeconds);
        }

        node.LastHeartbeat = now;
        node.Cpu = beat.Cpu;
        node.NetRx = beat.NetRx;
        node.NetTx = beat.NetTx;
        return Outcome.Ok;
    }

    /// <summary>A connection closed: the nodes registered over it have stopped.</summary>
    public void ConnectionClosed(long connectionId, List<NodeDeath> died)
    {
        foreach (var node in _nodes.Values.ToList())
        {
            if (node.ConnectionId != connectionId)
            {
                continue;
            }

            if (node.State is NodeState.Drained or NodeState.Standby)
            {
                // A drained node stopping is the end of a planned removal, not a failure; a standby node never held a block.
                Remove(node);
            }
            else if (node.State != NodeState.Dead)
            {
                // A storage node's registration connection closing means its process ended.
                node.State = NodeState.Dead;
                died.Add(new NodeDeath(node.Id, "its connection to the metadata server closed"));
            }
        }
    }

    /// <summary>
    /// Nodes silent for longer than the suspect time become suspect; for longer than the node timeout, a drained one is
    /// forgotten and any other declared dead.
    /// </summary>
    public void CheckLiveness(List<NodeDeath> died)
    {
        var now = time.GetTimestamp();
        foreach (var node in _nodes.Values.ToList())
        {
            var silent = time.GetElapsedTime(node.LastHeartbeat, now);
            if (silent <= nodeTimeout)
            {
                if (silent > suspectAfter && !node.Suspect && node.State is NodeState.Live or NodeState.Draining or NodeState.Standby)
                {
                    node.Suspect = true;
                    MetadataLog.NodeSuspect(logger, node.Id, silent.TotalSeconds, nodeTimeout.TotalSeconds);
                }

                continue;
            }

            if (node.State == NodeState.Drained)
            {
                Remove(node);
            }
            else if (node.State != NodeState.Dead)
            {
                node.State = NodeState.Dead;
                died.Add(new NodeDeath(node.Id, $"no heartbeat for {nodeTimeout.TotalSeconds:0.#} s"));
            }
        }
    }

    /// <summary>Moves a node towards drained: a live node starts draining, a standby node is drained at once.</summary>
    public Result<DrainStart> BeginDrain(uint id)
    {
        if (!_nodes.TryGetValue(id, out var node) || node.State == NodeState.Dead)
        {
            return Outcome.Fail(Status.NotFound, $"node {id} is not registered (or is dead)");
        }

        // Draining twice is harmless: the first drain goes on, a drained node stays drained.
        switch (node.State)
        {
            case NodeState.Standby:
                node.State = NodeState.Drained;
                return DrainStart.NothingToStart;
            case NodeState.Live:
                node.State = NodeState.Draining;
                MetadataLog.DrainStarted(logger, id, node.UsedBytes);
                return DrainStart.Started;
            default:
                return DrainStart.NothingToStart;
        }
    }

    /// <summary>The end of a drain: the extents kept for readers of old grants are freed and the node may stop.</summary>
    public void MarkDrained(NodeEntry node)
    {
        FreeExtents(node.Retired);
        node.Retired.Clear();
        node.State = NodeState.Drained;
        MetadataLog.NodeDrained(logger, node.Id, node.MovedBytes);
    }

    /// <summary>
    /// Gives extents back to their nodes, and queues a forget for each, so the grants of the freed allocation stop working
    /// on the node; a dead node's blocks are gone with it.
    /// </summary>
    public void FreeExtents(IReadOnlyList<Extent> extents)
    {
        for (var i = 0; i < extents.Count; i++)
        {
            var extent = extents[i];
            if (_nodes.TryGetValue(extent.NodeId, out var node) && node.State != NodeState.Dead && node.Owns(extent))
            {
                ExtentAllocator.Free(node, extent);
                Queue(extent, RevocationKind.Forget);
            }
        }
    }

    /// <summary>Queues a seal for each extent of a committed object (or a drain's switched copy): its write grants die.</summary>
    public void Seal(IReadOnlyList<Extent> extents)
    {
        for (var i = 0; i < extents.Count; i++)
        {
            var extent = extents[i];
            if (extent.Length > 0 && _nodes.TryGetValue(extent.NodeId, out var node) && node.State != NodeState.Dead && node.Owns(extent))
            {
                Queue(extent, RevocationKind.Seal);
            }
        }
    }

    private void Queue(in Extent extent, RevocationKind kind)
    {
        _revocations.Add(new PendingRevocation(extent.NodeId, new Revocation(kind, extent.Generation, extent.Offset, extent.Length)));
        RevocationsQueued++;
    }

    /// <summary>The revocations queued so far (handed over to the caller, who sends them), and the count queued up to now.</summary>
    public (List<PendingRevocation> Revocations, long Queued) TakeRevocations()
    {
        var taken = _revocations;
        _revocations = [];
        return (taken, RevocationsQueued);
    }

    /// <summary>The first node holding one of the extents that is dead (or no longer registered), if any, as "id (address)".</summary>
    public string? LostNode(IReadOnlyList<Extent> extents)
    {
        for (var i = 0; i < extents.Count; i++)
        {
            var id = extents[i].NodeId;
            if (!_nodes.TryGetValue(id, out var node))
            {
                return $"{id} (no longer registered)";
            }

            if (node.State == NodeState.Dead)
            {
                return $"{node.Id} ({node.Address})";
            }

            if (!node.Owns(extents[i]))
            {
                return $"{node.Id} ({node.Address}, declared dead before it registered again)";
            }
        }

        return null;
    }

    /// <summary>
    /// The first suspect node holding one of the extents, if any, as "id (address), silent for N s" (a reader gets
    /// <see cref="Status.NodeUnavailable"/> rather than a connection that hangs until the node answers).
    /// </summary>
    public string? UnavailableNode(IReadOnlyList<Extent> extents)
    {
        for (var i = 0; i < extents.Count; i++)
        {
            if (_nodes.TryGetValue(extents[i].NodeId, out var node) && node.Suspect && node.State != NodeState.Dead && node.Owns(extents[i]))
            {
                var silent = time.GetElapsedTime(node.LastHeartbeat).TotalSeconds;
                return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{node.Id} ({node.Address}), silent for {silent:0.#} s");
            }
        }

        return null;
    }

    /// <summary>How long a node may be silent before it is declared dead.</summary>
    public TimeSpan NodeTimeout => nodeTimeout;

    public NodeRecord[] Records() => [.. _nodes.Values.Select(ToRecord)];

    private static NodeRecord ToRecord(NodeEntry node) =>
        new(node.Id, node.Tier, node.ReportedState, node.Host, (ushort)node.Port, node.Capacity, node.State == NodeState.Dead ? 0 : node.UsedBytes, node.Cpu, node.NetRx, node.NetTx, node.MovedBytes);

    private void Remove(NodeEntry node)
    {
        _nodes.Remove(node.Id);
        _secrets.TryRemove(node.Id, out _);
        _addresses.TryRemove(node.Id, out _);
        MetadataLog.NodeRemoved(logger, node.Id);
    }
}
