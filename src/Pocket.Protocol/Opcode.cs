namespace Pocket.Protocol;

/// <summary>Request kinds. Numbers are part of the wire format: append only, never renumber.</summary>
public enum Opcode : byte
{
    /// <summary>Liveness probe; empty body, empty reply.</summary>
    Ping = 1,

    // Cluster management (storage node to metadata server, controller to metadata server).
    RegisterNode = 2,
    Heartbeat = 3,
    RegisterJob = 4,
    DeregisterJob = 5,
    SetWeights = 6,
    ListNodes = 7,
    JobStats = 8,

    /// <summary>Controller to metadata server: stop placing blocks on a node and move its live blocks elsewhere.</summary>
    DrainNode = 9,

    /// <summary>Controller to metadata server: a standby (warm-pool) node becomes live and placement may choose it.</summary>
    ActivateNode = 10,

    /// <summary>Controller to metadata server: the server's own load (CPU time, uptime, job requests) for scaling the metadata plane.</summary>
    ServerLoad = 11,

    // Namespace (client to metadata server).
    PutSmall = 20,
    Get = 21,
    Create = 22,
    Allocate = 23,
    Commit = 24,
    Abort = 25,
    Lookup = 26,
    Delete = 27,
    List = 28,
    Count = 29,

    // Blocks (client to storage server).
    WriteExtent = 40,
    ReadExtent = 41,

    /// <summary>
    /// Metadata server to a storage node: pull an extent from another storage node (with a read grant) into space
    /// this node granted for writing; the drain's storage-to-storage copy.
    /// </summary>
    CopyExtent = 42,

    /// <summary>Metadata server to storage node: seal committed extents, forget freed ones (signed with the node's secret).</summary>
    RevokeExtents = 43,

    /// <summary>
    /// Storage node to a metadata server, over its registration connection: give back up to a count of the node's
    /// segments that hold no allocated block (the node moves them to another metadata server).
    /// </summary>
    ReleaseShare = 44,

    /// <summary>Storage node to a metadata server, over its registration connection: allocate in these segments too.</summary>
    AddShare = 45,
}
