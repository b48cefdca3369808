namespace Pocket.Protocol.Messages;

/// <summary>DrainNode (cluster token): node id u32. Reply: empty; the copy runs in the background (ListNodes shows progress).</summary>
public static class DrainNodeRequest
{
    public static void Write(BodyWriter body, uint nodeId) => body.U32(nodeId);

    public static bool TryRead(ReadOnlySpan<byte> body, out uint nodeId)
    {
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>ActivateNode (cluster token): node id u32. A standby node becomes live; activating a live node is a no-op. Reply: empty.</summary>
public static class ActivateNodeRequest
{
    public static void Write(BodyWriter body, uint nodeId) => body.U32(nodeId);

    public static bool TryRead(ReadOnlySpan<byte> body, out uint nodeId)
    {
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        return !reader.Failed && reader.AtEnd;
    }
}
