namespace Pocket.Protocol.Messages;

/// <summary>Create: key, size hint i64 (-1 unknown). Flags: <see cref="FrameFlags.KeepAfterJob"/>.</summary>
public readonly ref struct CreateRequest
{
    private CreateRequest(ReadOnlySpan<byte> keyUtf8, long sizeHint)
    {
        KeyUtf8 = keyUtf8;
        SizeHint = sizeHint;
    }

    public ReadOnlySpan<byte> KeyUtf8 { get; }

    public string Key => Messages.Key.ToString(KeyUtf8);

    public long SizeHint { get; }

    public static void Write(BodyWriter body, string key, long sizeHint) => body.Str(key).I64(sizeHint);

    public static bool TryRead(ReadOnlySpan<byte> body, out CreateRequest request)
    {
        var reader = new BodyReader(body);
        var key = reader.StrUtf8();
        var sizeHint = reader.I64();
        request = new CreateRequest(key, sizeHint);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>
/// Create's reply: write handle u64, then write grants for the hinted size (<see cref="GrantList"/>), then, when the
/// request asked with <see cref="FrameFlags.NodeAddresses"/>, the addresses of the nodes they name (<see cref="NodeAddressList"/>).
/// </summary>
public readonly ref struct CreateReply
{
    private CreateReply(ulong handle, GrantList grants, NodeAddress[] nodes)
    {
        Handle = handle;
        Grants = grants;
        Nodes = nodes;
    }

    /// <summary>The addresses of the grants' nodes, when asked for and sent; else empty.</summary>
    public NodeAddress[] Nodes { get; }

    public ulong Handle { get; }

    public GrantList Grants { get; }

    /// <summary>Writes the handle; the caller then writes the grants.</summary>
    public static void WriteHead(BodyWriter body, ulong handle) => body.U64(handle);

    public static bool TryRead(ReadOnlySpan<byte> body, out CreateReply reply)
    {
        var reader = new BodyReader(body);
        var handle = reader.U64();
        reply = default;
        if (!GrantList.TryRead(ref reader, out var grants) || !NodeAddressList.TryReadOptional(ref reader, out var nodes))
        {
            return false;
        }

        reply = new CreateReply(handle, grants, nodes);
        return true;
    }
}
