namespace Pocket.Protocol.Messages;

/// <summary>Delete: key, or with <see cref="FrameFlags.Recursive"/> a prefix.</summary>
public readonly ref struct DeleteRequest
{
    private DeleteRequest(ReadOnlySpan<byte> keyUtf8) => KeyUtf8 = keyUtf8;

    public ReadOnlySpan<byte> KeyUtf8 { get; }

    public string Key => Messages.Key.ToString(KeyUtf8);

    public static void Write(BodyWriter body, string key) => body.Str(key);

    public static bool TryRead(ReadOnlySpan<byte> body, out DeleteRequest request)
    {
        var reader = new BodyReader(body);
        request = new DeleteRequest(reader.StrUtf8());
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>Delete's reply: objects deleted, i64.</summary>
public static class DeleteReply
{
    public const int Size = sizeof(long);

    public static void Write(Span<byte> body, long deleted) => System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(body, deleted);

    public static bool TryRead(ReadOnlySpan<byte> body, out long deleted)
    {
        var reader = new BodyReader(body);
        deleted = reader.I64();
        return !reader.Failed && reader.AtEnd;
    }
}
