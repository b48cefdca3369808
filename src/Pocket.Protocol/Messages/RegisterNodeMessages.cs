namespace Pocket.Protocol.Messages;

/// <summary>
/// RegisterNode (storage node to metadata server): tier u8, host, port u16, capacity i64, block size i32, the node's
/// 32-byte grant secret, then optional flags u8 (older nodes stop before it; bit 0: standby). Reply: <see cref="RegisterNodeReply"/>.
/// </summary>
public readonly ref struct RegisterNodeRequest
{
    public const int SecretSize = 32;

    /// <summary>The flag bit of a node that starts standby (warm pool), held out of placement until activated.</summary>
    public const byte StandbyFlag = 0x01;

    private RegisterNodeRequest(NodeTier tier, string host, ushort port, long capacity, int blockSize, ReadOnlySpan<byte> secret, byte flags)
    {
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

    public static void Write(BodyWriter body, NodeTier tier, string host, ushort port, long capacity, int blockSize, ReadOnlySpan<byte> secret, bool standby)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(secret.Length, SecretSize);
        body.U8((byte)tier).Str(host).U16(port).I64(capacity).I32(blockSize).Bytes(secret);
        if (standby)
        {
            // Written only when set, so a live node's registration is what older metadata servers expect.
            body.U8(StandbyFlag);
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
        request = new RegisterNodeRequest(tier, host, port, capacity, blockSize, secret, flags);
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
