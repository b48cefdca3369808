namespace Pocket.Protocol.Messages;

/// <summary>Count: prefix.</summary>
public readonly ref struct CountRequest
{
    private CountRequest(ReadOnlySpan<byte> prefixUtf8) => PrefixUtf8 = prefixUtf8;

    public ReadOnlySpan<byte> PrefixUtf8 { get; }

    public string Prefix => Key.ToString(PrefixUtf8);

    public static void Write(BodyWriter body, string prefix) => body.Str(prefix);

    public static bool TryRead(ReadOnlySpan<byte> body, out CountRequest request)
    {
        var reader = new BodyReader(body);
        request = new CountRequest(reader.StrUtf8());
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>Count's reply: objects under the prefix, i64.</summary>
public static class CountReply
{
    public const int Size = sizeof(long);

    public static void Write(Span<byte> body, long count) => System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(body, count);

    public static bool TryRead(ReadOnlySpan<byte> body, out long count)
    {
        var reader = new BodyReader(body);
        count = reader.I64();
        return !reader.Failed && reader.AtEnd;
    }
}
