namespace Pocket.Protocol.Messages;

/// <summary>Abort: handle u64. Drops an unfinished write, or releases a delete-after-read object once read. Reply: empty.</summary>
public readonly record struct AbortRequest(ulong Handle)
{
    public static void Write(BodyWriter body, ulong handle) => body.U64(handle);

    public static bool TryRead(ReadOnlySpan<byte> body, out AbortRequest request)
    {
        var reader = new BodyReader(body);
        request = new AbortRequest(reader.U64());
        return !reader.Failed && reader.AtEnd;
    }
}
