using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Pocket.Protocol.Messages;

/// <summary>What a <see cref="RevokeExtentsRequest"/> does to one extent's blocks on its node.</summary>
public enum RevocationKind : uint
{
    /// <summary>The object was committed: its write grants die, its read grants go on.</summary>
    Seal = 1,

    /// <summary>The space was freed (delete, abort, trim): every grant of that generation dies.</summary>
    Forget = 2,
}

/// <summary>One extent a <see cref="RevokeExtentsRequest"/> seals or forgets: the allocation generation and the byte range.</summary>
public readonly record struct Revocation(RevocationKind Kind, uint Generation, long Offset, long Length);

/// <summary>
/// RevokeExtents (metadata server to storage node): node id u32, count u32, count entries of (kind u32, generation u32,
/// offset i64, length i64), then a 16-byte MAC (the first 16 bytes of HMAC-SHA256 with the node's secret over all the
/// bytes before it), so only the metadata server, which alone shares the secret, can revoke. At most
/// <see cref="MaxEntries"/> entries, so a request always fits a small body that is buffered whole before the MAC is
/// checked. Replaying one is harmless: a generation's blocks are only ever sealed or forgotten once more, and blocks a
/// newer allocation owns are not touched. Reply: empty.
/// </summary>
public static class RevokeExtentsRequest
{
    private const int HeadSize = 8;
    private const int EntrySize = 24;
    private const int MacSize = 16;

    /// <summary>The most entries in one request (keeps its body under 16 KiB).</summary>
    public const int MaxEntries = 640;

    /// <summary>Writes a request for <paramref name="nodeId"/> signed with its secret.</summary>
    public static void Write(BodyWriter body, ReadOnlySpan<byte> secret, uint nodeId, ReadOnlySpan<Revocation> entries)
    {
        if (entries.Length > MaxEntries)
        {
            throw new ArgumentException($"at most {MaxEntries} extents per request", nameof(entries));
        }

        var start = body.Length;
        body.U32(nodeId).U32((uint)entries.Length);
        foreach (var entry in entries)
        {
            body.U32((uint)entry.Kind).U32(entry.Generation).I64(entry.Offset).I64(entry.Length);
        }

        var signed = body.WrittenSpan[start..];
        Span<byte> hash = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(secret, signed, hash);
        body.Bytes(hash[..MacSize]);
    }

    /// <summary>
    /// Reads a request and checks its MAC with <paramref name="secret"/>. <see cref="Status.BadRequest"/> for a malformed
    /// body, <see cref="Status.Unauthorized"/> for a MAC that does not match; entries are only returned when both hold.
    /// </summary>
    public static Status TryRead(ReadOnlySpan<byte> body, ReadOnlySpan<byte> secret, out uint nodeId, out Revocation[] entries)
    {
        entries = [];
        var reader = new BodyReader(body);
        nodeId = reader.U32();
        var count = reader.U32();
        if (reader.Failed || count > MaxEntries || body.Length != HeadSize + ((int)count * EntrySize) + MacSize)
        {
            return Status.BadRequest;
        }

        var signed = body[..^MacSize];
        Span<byte> hash = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(secret, signed, hash);
        if (!CryptographicOperations.FixedTimeEquals(hash[..MacSize], body[^MacSize..]))
        {
            return Status.Unauthorized;
        }

        var read = new Revocation[count];
        for (var i = 0; i < read.Length; i++)
        {
            var at = signed[(HeadSize + (i * EntrySize))..];
            read[i] = new Revocation(
                (RevocationKind)BinaryPrimitives.ReadUInt32LittleEndian(at),
                BinaryPrimitives.ReadUInt32LittleEndian(at[4..]),
                BinaryPrimitives.ReadInt64LittleEndian(at[8..]),
                BinaryPrimitives.ReadInt64LittleEndian(at[16..]));
        }

        entries = read;
        return Status.Ok;
    }
}
