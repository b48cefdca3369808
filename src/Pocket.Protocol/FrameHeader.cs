using System.Buffers.Binary;

namespace Pocket.Protocol;

/// <summary>
/// The fixed 32-byte little-endian header in front of every frame, request or reply.
/// Layout (offsets in bytes): 0 version u8, 1 opcode u8, 2 flags u16, 4 status u16, 6 reserved u16 (0),
/// 8 body length u32, 12 request id u32, 16 job token (16 bytes).
/// </summary>
public readonly record struct FrameHeader(
    Opcode Opcode,
    FrameFlags Flags,
    Status Status,
    int BodyLength,
    uint RequestId,
    JobToken Token)
{
    public const int Size = 32;
    public const byte CurrentVersion = 1;

    public bool IsReply => (Flags & FrameFlags.Reply) != 0;

    public void Write(Span<byte> destination)
    {
        destination[0] = CurrentVersion;
        destination[1] = (byte)Opcode;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)Flags);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], (ushort)Status);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], 0);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], BodyLength);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[12..], RequestId);
        Token.Write(destination[16..]);
    }

    /// <summary>
    /// Decodes a header. Returns a status other than <see cref="Status.Ok"/> when the header cannot be trusted;
    /// the connection must then be closed, because the frame boundary is lost.
    /// </summary>
    public static Status TryRead(ReadOnlySpan<byte> source, int maxBodyLength, out FrameHeader header)
    {
        header = default;
        if (source.Length < Size)
        {
            return Status.BadRequest;
        }

        if (source[0] != CurrentVersion)
        {
            return Status.VersionMismatch;
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(source[8..]);
        if (length < 0 || length > maxBodyLength)
        {
            return Status.FrameTooLarge;
        }

        if (BinaryPrimitives.ReadUInt16LittleEndian(source[6..]) != 0)
        {
            return Status.BadRequest;
        }

        header = new FrameHeader(
            (Opcode)source[1],
            (FrameFlags)BinaryPrimitives.ReadUInt16LittleEndian(source[2..]),
            (Status)BinaryPrimitives.ReadUInt16LittleEndian(source[4..]),
            length,
            BinaryPrimitives.ReadUInt32LittleEndian(source[12..]),
            JobToken.Read(source[16..]));
        return Status.Ok;
    }
}
