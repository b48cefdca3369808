using System.Buffers.Binary;
using System.Text;

namespace Pocket.Protocol;

/// <summary>
/// Reads little-endian primitives from a body. Never throws on short input: every read returns false
/// once the body is exhausted and <see cref="Failed"/> stays true, so handlers check once at the end.
/// </summary>
internal ref struct BodyReader
{
    private readonly ReadOnlySpan<byte> _source;
    private int _position;

    public BodyReader(ReadOnlySpan<byte> source)
    {
        _source = source;
        _position = 0;
        Failed = false;
    }

    public bool Failed { get; private set; }

    public readonly int Remaining => _source.Length - _position;

    public readonly bool AtEnd => _position == _source.Length;

    public readonly ReadOnlySpan<byte> Rest => _source[_position..];

    private bool Take(int count, out ReadOnlySpan<byte> span)
    {
        if (Failed || count < 0 || _source.Length - _position < count)
        {
            Failed = true;
            span = default;
            return false;
        }

        span = _source.Slice(_position, count);
        _position += count;
        return true;
    }

    public byte U8() => Take(1, out var s) ? s[0] : (byte)0;

    public ushort U16() => Take(2, out var s) ? BinaryPrimitives.ReadUInt16LittleEndian(s) : (ushort)0;

    public uint U32() => Take(4, out var s) ? BinaryPrimitives.ReadUInt32LittleEndian(s) : 0;

    public int I32() => Take(4, out var s) ? BinaryPrimitives.ReadInt32LittleEndian(s) : 0;

    public ulong U64() => Take(8, out var s) ? BinaryPrimitives.ReadUInt64LittleEndian(s) : 0;

    public long I64() => Take(8, out var s) ? BinaryPrimitives.ReadInt64LittleEndian(s) : 0;

    public double F64() => Take(8, out var s) ? BinaryPrimitives.ReadDoubleLittleEndian(s) : 0;

    public ReadOnlySpan<byte> Bytes(int count) => Take(count, out var s) ? s : default;

    public ReadOnlySpan<byte> Blob()
    {
        var length = U32();
        return length > int.MaxValue ? Fail() : Bytes((int)length);
    }

    private ReadOnlySpan<byte> Fail()
    {
        Failed = true;
        return default;
    }

    public string Str()
    {
        var length = U16();
        if (!Take(length, out var s))
        {
            return string.Empty;
        }

        try
        {
            return Utf8.GetString(s);
        }
        catch (DecoderFallbackException)
        {
            Failed = true;
            return string.Empty;
        }
    }

    /// <summary>
    /// The UTF-8 bytes of a string written by <see cref="BodyWriter.Str"/>, not decoded (so no string is made);
    /// invalid UTF-8 fails the reader as <see cref="Str"/> does.
    /// </summary>
    public ReadOnlySpan<byte> StrUtf8()
    {
        var length = U16();
        if (!Take(length, out var s))
        {
            return default;
        }

        return System.Text.Unicode.Utf8.IsValid(s) ? s : Fail();
    }

    public JobToken Token() => Take(JobToken.Size, out var s) ? JobToken.Read(s) : default;

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
