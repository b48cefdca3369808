using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Pocket.Protocol;

/// <summary>A 128-bit secret naming one job; carried in every frame header.</summary>
public readonly record struct JobToken(ulong Low, ulong High)
{
    public const int Size = 16;

    public static JobToken None => default;

    public bool IsNone => Low == 0 && High == 0;

    public static JobToken NewRandom()
    {
        Span<byte> bytes = stackalloc byte[Size];
        RandomNumberGenerator.Fill(bytes);
        return Read(bytes);
    }

    public static JobToken Read(ReadOnlySpan<byte> source) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(source), BinaryPrimitives.ReadUInt64LittleEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, Low);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], High);
    }

    /// <summary>32 lower-case hex digits, the form used on the command line and in HTTP.</summary>
    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[Size];
        Write(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    public static bool TryParse(string? text, out JobToken token)
    {
        token = default;
        if (text is null || text.Length != Size * 2)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[Size];
        if (Convert.FromHexString(text, bytes, out _, out var written) != OperationStatus.Done || written != Size)
        {
            return false;
        }

        token = Read(bytes);
        return true;
    }
}
