namespace Pocket.Protocol.Messages;

/// <summary>
/// CopyExtent (metadata server to the storage node that receives a copy): the write grant for the target's space,
/// the read grant for the source extent, the offset inside the source extent i32 where the copy starts, the source
/// node's port u16 and host. The target copies the write grant's length from the source with ReadExtent, straight
/// into the granted space. The write grant comes first so the target checks it before it reads anything else
/// (<see cref="WriteGrantSize"/> is the prefix it asks for). Reply: empty, or the source's error.
/// </summary>
public readonly ref struct CopyExtentRequest
{
    /// <summary>The leading bytes that hold the write grant, checked before the rest of the body is read.</summary>
    public const int WriteGrantSize = ExtentGrant.Size;

    /// <summary>The longest body: both grants, the offset, the port and a host of at most <see cref="MaxHostBytes"/>.</summary>
    public const int MaxSize = ExtentGrant.Size + ExtentGrant.Size + sizeof(int) + sizeof(ushort) + sizeof(ushort) + MaxHostBytes;

    /// <summary>A host name is at most 253 bytes (RFC 1035); an IPv6 literal is shorter.</summary>
    public const int MaxHostBytes = 255;

    private CopyExtentRequest(ExtentGrant target, ExtentGrant source, int within, ushort port, ReadOnlySpan<byte> hostUtf8)
    {
        Target = target;
        Source = source;
        Within = within;
        Port = port;
        HostUtf8 = hostUtf8;
    }

    /// <summary>The write grant for the target's space (the target node's own signature); its length is the copy's.</summary>
    public ExtentGrant Target { get; }

    /// <summary>The read grant for the source extent, checked by the source node when the target reads.</summary>
    public ExtentGrant Source { get; }

    /// <summary>Where inside the source extent the copied bytes start.</summary>
    public int Within { get; }

    /// <summary>The source node's port.</summary>
    public ushort Port { get; }

    /// <summary>The source node's host (as it registered), UTF-8.</summary>
    public ReadOnlySpan<byte> HostUtf8 { get; }

    public static void Write(BodyWriter body, in ExtentGrant target, in ExtentGrant source, int within, string host, ushort port)
    {
        if (System.Text.Encoding.UTF8.GetByteCount(host) > MaxHostBytes)
        {
            throw new ArgumentException($"host is longer than {MaxHostBytes} UTF-8 bytes", nameof(host));
        }

        GrantList.WriteGrant(body, target);
        GrantList.WriteGrant(body, source);
        body.I32(within).U16(port).Str(host);
    }

    /// <summary>Reads the write grant alone, from the body's first <see cref="WriteGrantSize"/> bytes.</summary>
    public static bool TryReadTarget(ReadOnlySpan<byte> prefix, out ExtentGrant target)
    {
        target = prefix.Length == WriteGrantSize ? ExtentGrant.Read(prefix) : default;
        return prefix.Length == WriteGrantSize;
    }

    public static bool TryRead(ReadOnlySpan<byte> body, out CopyExtentRequest request)
    {
        var reader = new BodyReader(body);
        var target = reader.Bytes(ExtentGrant.Size);
        var source = reader.Bytes(ExtentGrant.Size);
        var within = reader.I32();
        var port = reader.U16();
        var host = reader.StrUtf8();
        var ok = !reader.Failed && reader.AtEnd && host.Length is > 0 and <= MaxHostBytes;

        // Grants are decoded only after the length checks: a short body yields empty spans, which ExtentGrant.Read cannot take.
        request = ok ? new CopyExtentRequest(ExtentGrant.Read(target), ExtentGrant.Read(source), within, port, host) : default;
        return ok;
    }
}
