namespace Pocket.Protocol.Messages;

/// <summary>
/// WriteExtent (client or storage node to storage node): grant, offset inside the extent i32, then the data to
/// the end of the body. The storage node reads the fixed head first and the data straight into the device.
/// Reply: empty.
/// </summary>
public static class WriteExtentRequest
{
    /// <summary>Bytes of the head before the data.</summary>
    public const int HeadSize = ExtentGrant.Size + sizeof(int);

    /// <summary>Writes the head; the data follows as the frame's trailing segment.</summary>
    public static void Write(BodyWriter body, in ExtentGrant grant, int within)
    {
        GrantList.WriteGrant(body, grant);
        body.I32(within);
    }

    /// <summary>Reads a head of exactly <see cref="HeadSize"/> bytes.</summary>
    public static bool TryRead(ReadOnlySpan<byte> head, out ExtentGrant grant, out int within)
    {
        var reader = new BodyReader(head);
        var grantBytes = reader.Bytes(ExtentGrant.Size);
        within = reader.I32();
        grant = reader.Failed ? default : ExtentGrant.Read(grantBytes);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>ReadExtent (to a storage node): grant, offset inside the extent i32, length i32. Reply: the bytes, as data.</summary>
public static class ReadExtentRequest
{
    /// <summary>Bytes of the whole body.</summary>
    public const int Size = ExtentGrant.Size + sizeof(int) + sizeof(int);

    public static void Write(BodyWriter body, in ExtentGrant grant, int within, int length)
    {
        GrantList.WriteGrant(body, grant);
        body.I32(within).I32(length);
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out ExtentGrant grant, out int within, out int length)
    {
        var reader = new BodyReader(body);
        var grantBytes = reader.Bytes(ExtentGrant.Size);
        within = reader.I32();
        length = reader.I32();

        // Decoded only after the length check: a short body yields an empty span, which ExtentGrant.Read cannot take.
        grant = reader.Failed ? default : ExtentGrant.Read(grantBytes);
        return !reader.Failed && reader.AtEnd;
    }
}
