namespace Pocket.Protocol.Messages;

/// <summary>
/// ReleaseShare (storage node to metadata server, on its registration connection): node id u32, count u32 (at most 64).
/// Reply: the released segments' mask u64 (possibly fewer than asked, or none: only segments with no allocated block
/// are given back).
/// </summary>
public static class ReleaseShareRequest
{
    public const int Size = sizeof(uint) * 2;

    public static void Write(BodyWriter body, uint nodeId, int count) => body.U32(nodeId).U32((uint)count);

    public static bool TryRead(ReadOnlySpan<byte> body, out uint nodeId, out int count)
    {
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        var wanted = reader.U32();
        count = (int)Math.Min(wanted, 64u);
        return !reader.Failed && reader.AtEnd && wanted <= 64;
    }
}

/// <summary>ReleaseShare's reply, and AddShare's body after the node id: a segment mask u64 (bit s: segment s of 64).</summary>
public static class ShareMask
{
    public const int Size = sizeof(ulong);

    public static void Write(Span<byte> body, ulong mask) => System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(body, mask);

    public static bool TryRead(ReadOnlySpan<byte> body, out ulong mask)
    {
        var reader = new BodyReader(body);
        mask = reader.U64();
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>AddShare (storage node to metadata server, on its registration connection): node id u32, mask u64. Reply: empty.</summary>
public static class AddShareRequest
{
    public const int Size = sizeof(uint) + sizeof(ulong);

    public static void Write(BodyWriter body, uint nodeId, ulong mask) => body.U32(nodeId).U64(mask);

    public static bool TryRead(ReadOnlySpan<byte> body, out uint nodeId, out ulong mask)
    {
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        mask = reader.U64();
        return !reader.Failed && reader.AtEnd;
    }
}
