namespace Pocket.Protocol.Messages;

/// <summary>PutSmall: key, blob (u32 length, then the bytes). The whole object in one round trip. Reply: empty.</summary>
public readonly ref struct PutSmallRequest
{
    private PutSmallRequest(ReadOnlySpan<byte> keyUtf8, ReadOnlySpan<byte> data)
    {
        KeyUtf8 = keyUtf8;
        Data = data;
    }

    public ReadOnlySpan<byte> KeyUtf8 { get; }

    public ReadOnlySpan<byte> Data { get; }

    /// <summary>The key as a string (decoded on each call).</summary>
    public string Key => Messages.Key.ToString(KeyUtf8);

    /// <summary>Writes the key and the data's length; the data follows as the frame's trailing segment.</summary>
    public static void WriteHead(BodyWriter body, string key, int dataLength) => body.Str(key).U32((uint)dataLength);

    public static bool TryRead(ReadOnlySpan<byte> body, out PutSmallRequest request)
    {
        var reader = new BodyReader(body);
        var key = reader.StrUtf8();
        var data = reader.Blob();
        request = new PutSmallRequest(key, data);
        return !reader.Failed && reader.AtEnd;
    }
}
