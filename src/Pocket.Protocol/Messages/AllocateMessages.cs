namespace Pocket.Protocol.Messages;

/// <summary>Allocate: write handle u64, bytes i64. Reply: write grants for the new extents (<see cref="AllocateReply"/>).</summary>
public readonly record struct AllocateRequest(ulong Handle, long Bytes)
{
    public static void Write(BodyWriter body, ulong handle, long bytes) => body.U64(handle).I64(bytes);

    public static bool TryRead(ReadOnlySpan<byte> body, out AllocateRequest request)
    {
        var reader = new BodyReader(body);
        request = new AllocateRequest(reader.U64(), reader.I64());
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>Allocate's reply: the grants of the new extents, appended to the object (<see cref="GrantList"/>).</summary>
public static class AllocateReply
{
    public static bool TryRead(ReadOnlySpan<byte> body, out GrantList grants)
    {
        var reader = new BodyReader(body);
        return GrantList.TryRead(ref reader, out grants) && reader.AtEnd;
    }
}
