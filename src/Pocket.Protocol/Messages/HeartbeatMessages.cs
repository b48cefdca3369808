namespace Pocket.Protocol.Messages;

/// <summary>
/// Heartbeat (storage node to metadata server): node id u32, cpu share f64, received and sent bytes per second f64,
/// requests served i64. Reply: empty, or NotFound when the metadata server no longer knows the node.
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
