namespace Pocket.Protocol.Messages;

/// <summary>Lookup: key.</summary>
public readonly ref struct LookupRequest
{
    private LookupRequest(ReadOnlySpan<byte> keyUtf8) => KeyUtf8 = keyUtf8;

    public ReadOnlySpan<byte> KeyUtf8 { get; }

    public static void Write(BodyWriter body, string key) => body.Str(key);

    public static bool TryRead(ReadOnlySpan<byte> body, out LookupRequest request)
    {
        var reader = new BodyReader(body);
        request = new LookupRequest(reader.StrUtf8());
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>One extent of a <see cref="LookupReply"/>: the node, its state as the metadata server sees it, offset and length.</summary>
public readonly record struct LookupExtent(uint NodeId, NodeState NodeState, long Offset, int Length)
{
    public const int Size = sizeof(uint) + sizeof(byte) + sizeof(long) + sizeof(int);
}

/// <summary>
/// Lookup's reply: size i64, inline u8 (1 when held by the metadata server), put flags u16, extent count u32, then per
/// extent node u32, node state u8, offset i64, length i32 (<see cref="LookupExtent"/>).
/// </summary>
public readonly ref struct LookupReply
{
    private readonly ReadOnlySpan<byte> _extents;

    private LookupReply(long size, bool inline, FrameFlags flags, ReadOnlySpan<byte> extents)
    {
        Size = size;
        Inline = inline;
        Flags = flags;
        _extents = extents;
    }

    public long Size { get; }

    public bool Inline { get; }

    public FrameFlags Flags { get; }

    public int Count => _extents.Length / LookupExtent.Size;

    public LookupExtent this[int index]
    {
        get
        {
            var reader = new BodyReader(_extents.Slice(index * LookupExtent.Size, LookupExtent.Size));
            return new LookupExtent(reader.U32(), (NodeState)reader.U8(), reader.I64(), reader.I32());
        }
    }

    /// <summary>Writes the head; the caller then writes exactly <paramref name="count"/> extents with <see cref="WriteExtent"/>.</summary>
    public static void WriteHead(BodyWriter body, long size, bool inline, FrameFlags flags, int count) =>
        body.I64(size).U8(inline ? (byte)1 : (byte)0).U16((ushort)flags).U32((uint)count);

    public static void WriteExtent(BodyWriter body, in LookupExtent extent) =>
        body.U32(extent.NodeId).U8((byte)extent.NodeState).I64(extent.Offset).I32(extent.Length);

    public static bool TryRead(ReadOnlySpan<byte> body, out LookupReply reply)
    {
        var reader = new BodyReader(body);
        var size = reader.I64();
        var inline = reader.U8() != 0;
        var flags = (FrameFlags)reader.U16();
        var count = reader.U32();
        var extents = count > (uint)(reader.Remaining / LookupExtent.Size) ? reader.Bytes(-1) : reader.Bytes((int)count * LookupExtent.Size);
        reply = new LookupReply(size, inline, flags, extents);
        return !reader.Failed && reader.AtEnd;
    }
}
