namespace Pocket.Protocol.Messages;

/// <summary>
/// A list of extent grants inside a reply (Create, Allocate, Get): count u32, then <see cref="ExtentGrant.Size"/>
/// bytes per grant. A view over the reply's bytes: reading it allocates nothing.
/// </summary>
public readonly ref struct GrantList
{
    private readonly ReadOnlySpan<byte> _grants;

    private GrantList(ReadOnlySpan<byte> grants) => _grants = grants;

    /// <summary>Grants in the list.</summary>
    public int Count => _grants.Length / ExtentGrant.Size;

    /// <summary>The grant at <paramref name="index"/>.</summary>
    public ExtentGrant this[int index] => ExtentGrant.Read(_grants.Slice(index * ExtentGrant.Size, ExtentGrant.Size));

    /// <summary>Writes the count; the caller then writes exactly that many grants with <see cref="WriteGrant"/>.</summary>
    public static void WriteCount(BodyWriter body, int count) => body.U32((uint)count);

    /// <summary>Writes one grant of the list.</summary>
    public static void WriteGrant(BodyWriter body, in ExtentGrant grant)
    {
        grant.Write(body.GetSpan(ExtentGrant.Size));
        body.Advance(ExtentGrant.Size);
    }

    /// <summary>Reads a count and that many grants; false (and the reader failed) when the body is shorter.</summary>
    internal static bool TryRead(scoped ref BodyReader reader, out GrantList list)
    {
        var count = reader.U32();
        var bytes = count > (uint)(reader.Remaining / ExtentGrant.Size) ? reader.Bytes(-1) : reader.Bytes((int)count * ExtentGrant.Size);
        list = reader.Failed ? default : new GrantList(bytes);
        return !reader.Failed;
    }
}
