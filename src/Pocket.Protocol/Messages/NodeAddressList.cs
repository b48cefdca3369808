namespace Pocket.Protocol.Messages;

/// <summary>Where a storage node listens, as a Create or Get reply names it (see <see cref="NodeAddressList"/>).</summary>
public readonly record struct NodeAddress(uint Id, string Host, ushort Port);

/// <summary>
/// The addresses of the nodes a reply's grants name, appended after the grants of a Create or an extents Get reply when
/// the request carried <see cref="FrameFlags.NodeAddresses"/>: count u16, then (node id u32, host str, port u16) x count.
/// A fresh client thus reaches its first node without a ListNodes round trip. Older servers ignore the flag and append
/// nothing; older clients never set it, so they never see the section.
/// </summary>
public static class NodeAddressList
{
    /// <summary>The smallest entry (an empty host).</summary>
    private const int MinEntrySize = 4 + 2 + 2;

    public static void Write(BodyWriter body, ReadOnlySpan<NodeAddress> nodes)
    {
        body.U16(checked((ushort)nodes.Length));
        foreach (ref readonly var node in nodes)
        {
            body.U32(node.Id).Str(node.Host).U16(node.Port);
        }
    }

    /// <summary>Reads the section when the reader has bytes left (else an empty list); false on a short or malformed section.</summary>
    internal static bool TryReadOptional(scoped ref BodyReader reader, out NodeAddress[] nodes)
    {
        nodes = [];
        if (reader.AtEnd)
        {
            return true;
        }

        var count = reader.U16();
        if (reader.Failed || count > reader.Remaining / MinEntrySize)
        {
            return false;
        }

        var read = new NodeAddress[count];
        for (var i = 0; i < read.Length && !reader.Failed; i++)
        {
            read[i] = new NodeAddress(reader.U32(), reader.Str(), reader.U16());
        }

        if (reader.Failed || !reader.AtEnd)
        {
            return false;
        }

        nodes = read;
        return true;
    }
}
