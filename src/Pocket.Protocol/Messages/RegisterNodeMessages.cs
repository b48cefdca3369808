namespace Pocket.Protocol.Messages;

/// <summary>
/// RegisterNode (storage node to metadata server): tier u8, host, port u16, capacity i64, block size i32, the node's
/// 32-byte grant secret, then optional flags u8 (older nodes stop before it; bit 0: standby), then optionally a proposed
/// node id u32 and a share mask u64 (a node serving several metadata servers: the id it uses with all of them, 0 for
/// one the server assigns, and the segments of its blocks this server may allocate in, bit s for segment s of 64).
/// Reply: <see cref="RegisterNodeReply"/>.
/// </summary>
public readonly ref struct RegisterNodeRequest
{
    public const int SecretSize = 32;

    /// <summary>The flag bit of a node that starts standby (warm pool), held out of placement until activated.</summary>
    public const byte StandbyFlag = 0x01;

    /// <summary>The share of a node that serves one metadata server: every segment.</summary>
    public const ulong WholeNode = ulong.MaxValue;

    private RegisterNodeRequest(NodeTier tier, string host, ushort port, long capacity, int blockSize, ReadOnlySpan<byte> secret, byte flags, uint nodeId, ulong share)
    {
        NodeId = nodeId;
        Share = share;
        Tier = tier;
        Host = host;
        Port = port;
        Capacity = capacity;
        BlockSize = blockSize;
        Secret = secret;
        Flags = flags;
    }

    public NodeTier Tier { get; }

    public string Host { get; }

    public ushort Port { get; }

    public long Capacity { get; }

    public int BlockSize { get; }

    public ReadOnlySpan<byte> Secret { get; }

    public byte Flags { get; }

    public bool Standby => (Flags & StandbyFlag) != 0;

    /// <summary>The node id the node asks for (0: the server assigns one).</summary>
    public uint NodeId { get; }

    /// <summary>The segments of the node's blocks this server may allocate in (<see cref="WholeNode"/> when not sent).</summary>
    public ulong Share { get; }

    public static void Write(BodyWriter body, NodeTier tier, string host, ushort port, long capacity, int blockSize, ReadOnlySpan<byte> secret, bool standby)
        => Write(body, tier, host, port, capacity, blockSize, secret, standby, 0, WholeNode);

    /// <summary>A registration with a proposed node id and a share (both left out when 0 and <see cref="WholeNode"/>).</summary>
    public static void Write(BodyWriter body, NodeTier tier, string host, ushort port, long capacity, int blockSize, ReadOnlySpan<byte> secret, bool standby, uint nodeId, ulong share)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(secret.Length, SecretSize);
        body.U8((byte)tier).Str(host).U16(port).I64(capacity).I32(blockSize).Bytes(secret);
        var shared = nodeId != 0 || share != WholeNode;
        if (standby || shared)
        {
            // Written only when needed, so a live node of one server registers as older metadata servers expect.
            body.U8(standby ? StandbyFlag : (byte)0);
        }

        if (shared)
        {
            body.U32(nodeId).U64(share);
        }
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out RegisterNodeRequest request)
    {
        var reader = new BodyReader(body);
        var tier = (NodeTier)reader.U8();
        var host = reader.Str();
        var port = reader.U16();
        var capacity = reader.I64();
        var blockSize = reader.I32();
        var secret = reader.Bytes(SecretSize);
        var flags = reader.AtEnd ? (byte)0 : reader.U8();
        var (nodeId, share) = reader.AtEnd ? (0u, WholeNode) : (reader.U32(), reader.U64());
        request = new RegisterNodeRequest(tier, host, port, capacity, blockSize, secret, flags, nodeId, share);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>RegisterNode's reply: the node id u32 the metadata server gave the node.</summary>
public static class RegisterNodeReply
{
    public const int Size = sizeof(uint);

    public static void Write(Span<byte> body, uint nodeId) => System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(body, nodeId);

    public static bool TryRead(ReadOnlySpan<byte> body, out uint nodeId)
    {
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        return !reader.Failed && reader.AtEnd;
    }
}
