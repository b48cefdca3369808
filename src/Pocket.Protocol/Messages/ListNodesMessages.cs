namespace Pocket.Protocol.Messages;

/// <summary>A storage node in a <see cref="ListNodesReply"/>.</summary>
public readonly record struct NodeRecord(uint Id, NodeTier Tier, NodeState State, string Host, ushort Port, long Capacity, long Used, double Cpu, double NetRx, double NetTx, long MovedBytes);

/// <summary>
/// ListNodes' reply (the request body is empty): count u32, per node id u32, tier u8, state u8, host, port u16,
/// capacity i64, used i64, cpu f64, rx f64, tx f64; then (older servers stop before it) the bytes a drain has moved
/// off each node, i64, in the same order.
/// </summary>
public static class ListNodesReply
{
    public static void Write(BodyWriter body, ReadOnlySpan<NodeRecord> nodes)
    {
        body.U32((uint)nodes.Length);
        foreach (ref readonly var node in nodes)
        {
            body.U32(node.Id).U8((byte)node.Tier).U8((byte)node.State).Str(node.Host).U16(node.Port)
                .I64(node.Capacity).I64(node.Used).F64(node.Cpu).F64(node.NetRx).F64(node.NetTx);
        }

        foreach (ref readonly var node in nodes)
        {
            body.I64(node.MovedBytes);
        }
    }

    /// <summary>The smallest node entry (an empty host).</summary>
    private const int MinNodeSize = 4 + 1 + 1 + 2 + 2 + 8 + 8 + 8 + 8 + 8;

    public static bool TryRead(ReadOnlySpan<byte> body, out NodeRecord[] nodes)
    {
        nodes = [];
        var reader = new BodyReader(body);
        var count = reader.U32();
        if (reader.Failed || count > (uint)body.Length / MinNodeSize)
        {
            return false;
        }

        var read = new NodeRecord[count];
        for (var i = 0; i < read.Length && !reader.Failed; i++)
        {
            read[i] = new NodeRecord(reader.U32(), (NodeTier)reader.U8(), (NodeState)reader.U8(), reader.Str(), reader.U16(), reader.I64(), reader.I64(), reader.F64(), reader.F64(), reader.F64(), 0);
        }

        if (reader.Failed)
        {
            return false;
        }

        // Sections a newer server appends after the moved bytes are skipped, not refused.
        if (reader.Remaining >= read.Length * sizeof(long))
        {
            for (var i = 0; i < read.Length; i++)
            {
                read[i] = read[i] with { MovedBytes = reader.I64() };
            }
        }

        nodes = read;
        return true;
    }
}
