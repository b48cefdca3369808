namespace Pocket.Protocol.Messages;

/// <summary>Get: key, offset i64, length i64 (-1 = to the end). Flags: <see cref="FrameFlags.DeleteAfterRead"/>.</summary>
public readonly ref struct GetRequest
{
    private GetRequest(ReadOnlySpan<byte> keyUtf8, long offset, long length)
    {
        KeyUtf8 = keyUtf8;
        Offset = offset;
        Length = length;
    }

    public ReadOnlySpan<byte> KeyUtf8 { get; }

    public long Offset { get; }

    public long Length { get; }

    public static void Write(BodyWriter body, string key, long offset, long length) => body.Str(key).I64(offset).I64(length);

    public static bool TryRead(ReadOnlySpan<byte> body, out GetRequest request)
    {
        var reader = new BodyReader(body);
        var key = reader.StrUtf8();
        var offset = reader.I64();
        var length = reader.I64();
        request = new GetRequest(key, offset, length);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>
/// Get's reply: kind u8, object size i64, then for kind 0 (inline) the bytes of the range to the end of the body,
/// for kind 1 (extents) a release handle u64 (non-zero after delete-after-read; the reader aborts it when done)
/// and the read grants (<see cref="GrantList"/>), then, when the request asked with <see cref="FrameFlags.NodeAddresses"/>,
/// the addresses of the nodes they name (<see cref="NodeAddressList"/>).
/// </summary>
public readonly ref struct GetReply
{
    public const byte InlineKind = 0;
    public const byte ExtentsKind = 1;

    private GetReply(bool isInline, long size, ReadOnlySpan<byte> inline, ulong release, GrantList grants, NodeAddress[]? nodes = null)
    {
        IsInline = isInline;
        Size = size;
        Inline = inline;
        Release = release;
        Grants = grants;
        Nodes = nodes ?? [];
    }

    /// <summary>The addresses of the grants' nodes, when asked for and sent; else empty.</summary>
    public NodeAddress[] Nodes { get; }

    public bool IsInline { get; }

    public long Size { get; }

    /// <summary>The requested range of an inline object.</summary>
    public ReadOnlySpan<byte> Inline { get; }

    public ulong Release { get; }

    public GrantList Grants { get; }

    /// <summary>Bytes of an inline reply before its range: the kind and the object size.</summary>
    public const int InlineHeadSize = 9;

    public static void WriteInline(BodyWriter body, long size, ReadOnlySpan<byte> range)
    {
        Span<byte> head = stackalloc byte[InlineHeadSize];
        WriteInlineHead(head, size);
        body.Bytes(head).Bytes(range);
    }

    /// <summary>
    /// Writes the head of an inline reply (<see cref="InlineHeadSize"/> bytes); the range follows it, so a server can
    /// send the stored bytes after the head without first copying them into a body.
    /// </summary>
    public static void WriteInlineHead(Span<byte> head, long size)
    {
        head[0] = InlineKind;
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(head[1..InlineHeadSize], size);
    }

    /// <summary>Writes the head of an extents reply; the caller then writes the grants (<see cref="GrantList"/>).</summary>
    public static void WriteExtentsHead(BodyWriter body, long size, ulong release) => body.U8(ExtentsKind).I64(size).U64(release);

    public static bool TryRead(ReadOnlySpan<byte> body, out GetReply reply)
    {
        reply = default;
        var reader = new BodyReader(body);
        var kind = reader.U8();
        var size = reader.I64();
        if (reader.Failed)
        {
            return false;
        }

        if (kind == InlineKind)
        {
            reply = new GetReply(true, size, reader.Rest, 0, default);
            return true;
        }

        var release = reader.U64();
        if (kind != ExtentsKind || !GrantList.TryRead(ref reader, out var grants) || !NodeAddressList.TryReadOptional(ref reader, out var nodes))
        {
            return false;
        }

        reply = new GetReply(false, size, default, release, grants, nodes);
        return true;
    }
}
