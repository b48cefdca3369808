using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>One storage node as the metadata server sees it, for metrics.</summary>
public readonly record struct MetadataNodeSnapshot(uint Id, NodeTier Tier, NodeState State, long Capacity, long Used, long MovedBytes);

/// <summary>What the metadata server holds at one moment, for metrics (taken under its lock, so it is consistent).</summary>
public sealed record MetadataSnapshot(
    int Jobs,
    long Objects,
    long InlineBytes,
    long InlineCapacity,
    int OpenHandles,
    int Connections,
    IReadOnlyList<MetadataNodeSnapshot> Nodes)
{
    /// <summary>Bytes of object memory counted now (keys, records and inline bytes of every object and open write).</summary>
    public long ObjectMemory { get; init; }

    /// <summary>The bound on <see cref="ObjectMemory"/> (<see cref="MetadataServerOptions.MaxObjectMemory"/>).</summary>
    public long MaxObjectMemory { get; init; }

    /// <summary>Bytes of inline slots holding objects (whole pages; objects of half a page or less keep arrays and are not counted).</summary>
    public long InlineSlotBytes { get; init; }

    /// <summary>Bytes of free inline slots still faulted in, kept for the next puts until a trim gives them back.</summary>
    public long InlineFreeResidentBytes { get; init; }

    /// <summary>Bytes of inline slots given back to the system since the server started.</summary>
    public long InlineReleasedBytes { get; init; }
}

public sealed partial class MetadataServer
{
    /// <summary>Client and node connections open now.</summary>
    public int ConnectionCount => _server?.ConnectionCount ?? 0;

    /// <summary>Times a connection's requests were held back because its peer let replies wait unread.</summary>
    public long ReplyPauses => _server?.ReplyPauses ?? 0;

    /// <summary>Connections closed because their peer read none of its waiting replies for the stall timeout.</summary>
    public long StalledReaders => _server?.StalledReaders ?? 0;

    /// <summary>
    /// Counts of jobs, objects and inline bytes and every node's capacity and use. Costs one pass over jobs and
    /// nodes under the lock; meant for a scrape every few seconds, not for the request path.
    /// </summary>
    public MetadataSnapshot Snapshot() => _state.Snapshot(ConnectionCount);
}
