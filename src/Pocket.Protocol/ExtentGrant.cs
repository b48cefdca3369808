using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Pocket.Protocol;

/// <summary>What a grant allows its holder to do with an extent.</summary>
[Flags]
public enum GrantRights : uint
{
    None = 0,
    Read = 1,
    Write = 2,
}

/// <summary>
/// A capability for one contiguous extent on one storage node, issued by the metadata server and checked
/// by the storage node with a MAC over the other fields (the node's secret is known to it and to the
/// metadata server only). It lets a client move data with one round trip to the node, and it names the
/// allocation generation so a holder of an old grant cannot read or overwrite space that was reused. It expires at
/// <see cref="Expires"/> (Unix time in milliseconds, by the metadata server's clock; the node allows for clock skew).
/// Wire form (48 bytes): node u32, generation u32, offset u64, length u32, rights u32, expires i64, mac 16 bytes
/// (the first 16 bytes of HMAC-SHA256 with the node's secret over the 32 bytes before it).
/// </summary>
public readonly record struct ExtentGrant(uint NodeId, uint Generation, long Offset, int Length, GrantRights Rights, long Expires, UInt128 Mac)
{
    public const int Size = 48;
    private const int SignedSize = 32;

    public void Write(Span<byte> destination)
    {
        WriteSigned(destination);
        BinaryPrimitives.WriteUInt128LittleEndian(destination[SignedSize..], Mac);
    }

    private void WriteSigned(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, NodeId);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Generation);
        BinaryPrimitives.WriteInt64LittleEndian(destination[8..], Offset);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], (uint)Rights);
        BinaryPrimitives.WriteInt64LittleEndian(destination[24..], Expires);
    }

    public static ExtentGrant Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadInt32LittleEndian(source[16..]),
        (GrantRights)BinaryPrimitives.ReadUInt32LittleEndian(source[20..]),
        BinaryPrimitives.ReadInt64LittleEndian(source[24..]),
        BinaryPrimitives.ReadUInt128LittleEndian(source[SignedSize..]));

    /// <summary>Signs a grant that expires at <paramref name="expires"/> (Unix time in milliseconds).</summary>
    public static ExtentGrant Sign(ReadOnlySpan<byte> secret, uint nodeId, uint generation, long offset, int length, GrantRights rights, long expires)
    {
        var unsigned = new ExtentGrant(nodeId, generation, offset, length, rights, expires, 0);
        return unsigned with { Mac = unsigned.ComputeMac(secret) };
    }

    public bool Verify(ReadOnlySpan<byte> secret) => ComputeMac(secret) == Mac;

    public ExtentGrant WithRights(ReadOnlySpan<byte> secret, GrantRights rights) =>
        Sign(secret, NodeId, Generation, Offset, Length, rights, Expires);

    /// <summary>
    /// True once the grant's expiry, plus <paramref name="skew"/> for the difference between the metadata server's
    /// clock and the checking node's, lies before <paramref name="now"/>.
    /// </summary>
    public bool IsExpired(DateTimeOffset now, TimeSpan skew) => now.ToUnixTimeMilliseconds() > Expires + (long)skew.TotalMilliseconds;

    private UInt128 ComputeMac(ReadOnlySpan<byte> secret)
    {
        Span<byte> signed = stackalloc byte[SignedSize];
        WriteSigned(signed);
        Span<byte> hash = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(secret, signed, hash);
        return BinaryPrimitives.ReadUInt128LittleEndian(hash);
    }
}
