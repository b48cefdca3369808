namespace Pocket.Protocol.Messages;

/// <summary>Commit: write handle u64, final size i64. The object becomes visible at once. Reply: empty.</summary>
public readonly record struct CommitRequest(ulong Handle, long Size)
{
    public static void Write(BodyWriter body, ulong handle, long size) => body.U64(handle).I64(size);

    public static bool TryRead(ReadOnlySpan<byte> body, out CommitRequest request)
    {
        var reader = new BodyReader(body);
        request = new CommitRequest(reader.U64(), reader.I64());
        return !reader.Failed && reader.AtEnd;
    }
}
