namespace Pocket.Protocol.Messages;

/// <summary>
/// Heartbeat (storage node to metadata server): node id u32, cpu share f64, received and sent bytes per second f64,
/// requests served i64. Reply: empty (a node that gives the server all of it), a <see cref="HeartbeatReply"/> (a node
/// serving several servers), or NotFound when the metadata server no longer knows the node.
/// </summary>
public readonly record struct HeartbeatRequest(uint NodeId, double Cpu, double NetRx, double NetTx, long Requests)
{
    public static void Write(BodyWriter body, in HeartbeatRequest request) =>
        body.U32(request.NodeId).F64(request.Cpu).F64(request.NetRx).F64(request.NetTx).I64(request.Requests);

    public static bool TryRead(ReadOnlySpan<byte> body, out HeartbeatRequest request)
    {
        var reader = new BodyReader(body);
        request = new HeartbeatRequest(reader.U32(), reader.F64(), reader.F64(), reader.F64(), reader.I64());
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>
/// Heartbeat's reply to a node that serves several metadata servers: what this server uses of its share, bytes i64, and
/// the free space its jobs' reservations still want on the node, bytes i64. The node, which alone sees every server's
/// answer, moves free segments towards the servers that want them (docs/architecture.md, "Several metadata servers").
/// </summary>
public readonly record struct HeartbeatReply(long UsedBytes, long WantedBytes)
{
    public const int Size = sizeof(long) * 2;

    public static void Write(Span<byte> body, in HeartbeatReply reply)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(body, reply.UsedBytes);
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(body[sizeof(long)..], reply.WantedBytes);
    }

    /// <summary>Reads a reply; an empty body (a server that reports nothing) reads as nothing used and nothing wanted.</summary>
    public static bool TryRead(ReadOnlySpan<byte> body, out HeartbeatReply reply)
    {
        reply = default;
        if (body.IsEmpty)
        {
            return true;
        }

        var reader = new BodyReader(body);
        reply = new HeartbeatReply(reader.I64(), reader.I64());
        return !reader.Failed && reader.AtEnd && reply.UsedBytes >= 0 && reply.WantedBytes >= 0;
    }
}
