using Pocket.Metadata.Placement;
using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>A contiguous run of bytes on one node, owned by one object.</summary>
internal readonly record struct Extent(uint NodeId, uint Generation, long Offset, int Length, NodeTier Tier);

internal sealed class NodeEntry
{
    public required uint Id { get; init; }
    public required NodeTier Tier { get; init; }
    public required string Host { get; init; }
    public required int Port { get; init; }
    /// <summary>The node's whole capacity, as it registered.</summary>
    public required long RegisteredCapacity { get; init; }
    public required int BlockSize { get; init; }

    /// <summary>
    /// What this server may use of the node: all of it, or the blocks of its share when the node serves several
    /// metadata servers (<see cref="BlockAllocator.Share"/>).
    /// </summary>
    public long Capacity => Allocator.Share == BlockAllocator.AllSegments ? RegisteredCapacity : Allocator.ShareBlocks * BlockSize;
    public required byte[] Secret { get; init; }
    public required BlockAllocator Allocator { get; init; }
    public required long ConnectionId { get; init; }
    public NodeState State { get; set; } = NodeState.Live;
    public long LastHeartbeat { get; set; }

    /// <summary>Missed heartbeats past the suspect time: out of placement, its blocks unreadable until it answers.</summary>
    public bool Suspect { get; set; }

    /// <summary>The state lists and telemetry show: <see cref="NodeState.Suspect"/> over any state but dead.</summary>
    public NodeState ReportedState => Suspect && State != NodeState.Dead ? NodeState.Suspect : State;
    public double Cpu { get; set; }
    public double NetRx { get; set; }
    public double NetTx { get; set; }
    public uint NextGeneration { get; set; } = 1;

    /// <summary>
    /// The first generation this record issued. A node id registered again after its record was declared dead gets a
    /// new record that starts after every generation of the dead one, so an extent (or grant) of the dead record is told
    /// apart by its generation alone (<see cref="Owns"/>).
    /// </summary>
    public uint FirstGeneration { get; init; } = 1;

    /// <summary>True when <paramref name="extent"/> was allocated by this record (not by a dead record of the same id).</summary>
    public bool Owns(in Extent extent) => extent.NodeId == Id && extent.Generation >= FirstGeneration;

    /// <summary>Bytes copied off this node by a drain so far.</summary>
    public long MovedBytes { get; set; }

    /// <summary>
    /// Extents whose objects were switched to copies elsewhere. They stay allocated (and readable through old
    /// grants) until the node is drained, so a reader that fetched grants before the switch still gets its bytes.
    /// </summary>
    public List<Extent> Retired { get; } = [];

    public long UsedBytes => (Allocator.ShareBlocks - Allocator.FreeBlocks) * (long)BlockSize;

    public long FreeBytes => Allocator.FreeBlocks * (long)BlockSize;

    public string Address => $"{Host}:{Port}";
}

internal sealed class ObjectEntry
{
    public required string Key { get; init; }
    public required long Size { get; init; }
    /// <summary>An inline object's bytes (null for one on storage nodes).</summary>
    public InlineBlock? Inline { get; init; }
    public Extent[] Extents { get; init; } = [];
    public FrameFlags Flags { get; init; }
}

internal sealed class JobEntry
{
    public JobEntry() => ObjectsByChars = Objects.GetAlternateLookup<ReadOnlySpan<char>>();

    public required string Id { get; init; }
    public required JobToken Token { get; init; }
    public Dictionary<uint, double> Weights { get; set; } = [];

    /// <summary>The tier the controller chose; new blocks go there first and spill to slower tiers when it is full.</summary>
    public NodeTier Tier { get; set; } = NodeTier.Dram;

    /// <summary>Bytes of committed objects per tier, indexed by <see cref="NodeTier"/>.</summary>
    public long[] TierBytes { get; } = new long[4];
    public Dictionary<string, ObjectEntry> Objects { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// <see cref="Objects"/> looked up by a key's characters, made once: asking the dictionary for it per request
    /// checks its comparer with a cast (a type-check helper call on every small get).
    /// </summary>
    public Dictionary<string, ObjectEntry>.AlternateLookup<ReadOnlySpan<char>> ObjectsByChars { get; }

    public SortedKeyIndex Keys { get; } = new();

    /// <summary>Keys being written: reserved so a second writer gets "exists" at once.</summary>
    public HashSet<string> Reserved { get; } = new(StringComparer.Ordinal);
    public long StoredBytes { get; set; }
    public long InlineBytes { get; set; }
    public long Requests { get; set; }

    /// <summary>The job's limits (0: none of that kind), checked by every create and allocation.</summary>
    public JobQuota Quota { get; init; }

    /// <summary>Bytes allocated to this job's open writes (moved to <see cref="StoredBytes"/> at commit).</summary>
    public long PendingBytes { get; set; }

    /// <summary>UTF-8 bytes of the keys of its objects and open writes.</summary>
    public long KeyBytes { get; set; }

    /// <summary>This job's share of the metadata server's object memory (key, records and inline bytes of its objects and open writes).</summary>
    public long MemoryBytes { get; set; }

    /// <summary>Objects, counting keys reserved by open writes: what the object quota limits.</summary>
    public long ObjectCount => Objects.Count + Reserved.Count;

    /// <summary>Data bytes held: committed blocks, inline bytes and open writes' allocations; what the byte quota limits.</summary>
    public long UsedBytes => StoredBytes + InlineBytes + PendingBytes;

    /// <summary>Set once the job is deregistered while holding keep-after-job objects: read-only until then.</summary>
    public long? RetiredUntil { get; set; }

    /// <summary>Why the job ended (as its deregistration said), remembered until its keep-after-job objects expire.</summary>
    public string? EndedWhy { get; set; }
}

/// <summary>An object being written, or one being read after a delete-after-read: it holds extents until released.</summary>
internal sealed class OpenHandle
{
    public required ulong Id { get; init; }
    public required JobEntry Job { get; init; }
    public required string Key { get; init; }
    public required long ConnectionId { get; init; }
    public FrameFlags Flags { get; init; }
    public List<Extent> Extents { get; } = [];
    public long Allocated { get; set; }

    /// <summary>True for a write; false for a read that keeps a deleted object's extents alive.</summary>
    public bool IsWrite { get; init; }
}
