namespace Pocket.Protocol;

/// <summary>Per-request flags. Bit positions are part of the wire format.</summary>
[Flags]
public enum FrameFlags : ushort
{
    None = 0,

    /// <summary>Get: remove the object once this read has been granted.</summary>
    DeleteAfterRead = 1 << 0,

    /// <summary>Put/Create: the object outlives its job until its own time to live.</summary>
    KeepAfterJob = 1 << 1,

    /// <summary>Delete: the key is a prefix; delete every object under it.</summary>
    Recursive = 1 << 2,

    /// <summary>
    /// Create/Get: append the address of every node the reply's grants name (<see cref="Messages.NodeAddressList"/>), so a
    /// client that has not listed the nodes needs no ListNodes round trip. Not kept with the object.
    /// </summary>
    NodeAddresses = 1 << 3,

    /// <summary>Set on every reply frame.</summary>
    Reply = 1 << 15,
}
