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
/// allocation generation so a holder of an old grant cannot read or overwrite space that was reused.
/// Wire form (40 bytes): node u32, generation u32, offset u64, length u32, rights u32, mac 16 bytes.
/// </summary>
public readonly record struct ExtentGrant(uint NodeId, uint Generation, long Offset, int Length, GrantRights Rights, UInt128 Mac)
{
    public const int Size = 40;
    private const int SignedSize = 24;

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
    }

    public static ExtentGrant Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(source),
        BinaryPrimitives.ReadUInt32LittleEndian(source[4..]),
        BinaryPrimitives.ReadInt64LittleEndian(source[8..]),
        BinaryPrimitives.ReadInt32LittleEndian(source[16..]),
        (GrantRights)BinaryPrimitives.ReadUInt32LittleEndian(source[20..]),
        BinaryPrimitives.ReadUInt128LittleEndian(source[SignedSize..]));

    public static ExtentGrant Sign(ReadOnlySpan<byte> secret, uint nodeId, uint generation, long offset, int length, GrantRights rights)
    {
        var unsigned = new ExtentGrant(nodeId, generation, offset, length, rights, 0);
        return unsigned with { Mac = unsigned.ComputeMac(secret) };
    }

    public bool Verify(ReadOnlySpan<byte> secret) => ComputeMac(secret) == Mac;

    public ExtentGrant WithRights(ReadOnlySpan<byte> secret, GrantRights rights) =>
        Sign(secret, NodeId, Generation, Offset, Length, rights);

    private UInt128 ComputeMac(ReadOnlySpan<byte> secret)
    {
        Span<byte> signed = stackalloc byte[SignedSize];
        WriteSigned(signed);
        Span<byte> hash = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(secret, signed, hash);
        return BinaryPrimitives.ReadUInt128LittleEndian(hash);
    }
}
