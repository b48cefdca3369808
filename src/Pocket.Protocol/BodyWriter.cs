using System.Buffers.Binary;
using System.Text;
using System.Text.Unicode;

namespace Pocket.Protocol;

/// <summary>Writes little-endian primitives and length-prefixed strings into a growable buffer.</summary>
public sealed class BodyWriter
{
    private byte[] _buffer;
    private int _length;

    public BodyWriter(int capacity = 256) => _buffer = new byte[Math.Max(capacity, 16)];

    /// <summary>Writers larger than this are not kept by <see cref="Return"/>.</summary>
    private const int MaxPooledCapacity = 64 << 10;

    private static readonly BodyWriter?[] Pool = new BodyWriter?[32];

    /// <summary>
    /// One writer kept by each thread before the shared pool: a request path rents and returns on the same few
    /// threads (the client loops, the callers), and the shared slots cost a compare-and-swap each way on a cache line
    /// every core writes (1.4 % of a fan-in load generator's CPU, all in the get path's Return).
    /// </summary>
    [ThreadStatic]
    private static BodyWriter? t_cached;

    /// <summary>
    /// A reset writer from a small process-wide pool (a new one when the pool is empty), so a request path can
    /// encode its body without allocating. Give it back with <see cref="Return"/> once nothing reads its memory.
    /// With <paramref name="capacity"/>, a pooled writer at least that large is preferred, and the one handed out
    /// has room for that many bytes: a large reply does not grow a small writer step by step.
    /// </summary>
    public static BodyWriter Rent(int capacity = 0)
    {
        if (t_cached is { } cached && cached._buffer.Length >= capacity)
        {
            t_cached = null;
            cached.Reset();
            return cached;
        }

        if (((capacity > 0 ? TakePooled(capacity) : null) ?? TakePooled(0)) is { } writer)
        {
            writer.Reset();
            writer.GetSpan(capacity);
            return writer;
        }

        return new BodyWriter(capacity);
    }

    /// <summary>Takes a pooled writer whose buffer holds at least <paramref name="minCapacity"/> bytes, if any.</summary>
    private static BodyWriter? TakePooled(int minCapacity)
    {
        for (var i = 0; i < Pool.Length; i++)
        {
            if (Volatile.Read(ref Pool[i]) is { } candidate && candidate._buffer.Length >= minCapacity && Interlocked.CompareExchange(ref Pool[i], null, candidate) == candidate)
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>Gives a rented writer back; the caller must not touch it or its memory afterwards.</summary>
    public static void Return(BodyWriter writer)
    {
        if (writer._buffer.Length > MaxPooledCapacity)
        {
            return;
        }

        if (t_cached is null)
        {
            t_cached = writer;
            return;
        }

        for (var i = 0; i < Pool.Length; i++)
        {
            if (Volatile.Read(ref Pool[i]) is null && Interlocked.CompareExchange(ref Pool[i], writer, null) is null)
            {
                return;
            }
        }
    }

    public int Length => _length;

    public ReadOnlySpan<byte> WrittenSpan => _buffer.AsSpan(0, _length);

    public ReadOnlyMemory<byte> WrittenMemory => _buffer.AsMemory(0, _length);

    public void Reset() => _length = 0;

    public byte[] ToArray() => WrittenSpan.ToArray();

    public Span<byte> GetSpan(int size)
    {
        if (_length + size > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + size));
        }

        return _buffer.AsSpan(_length, size);
    }

    public void Advance(int count) => _length += count;

    /// <summary>Overwrites a u32 already written at <paramref name="offset"/> (a count known only after its items).</summary>
    public void PatchU32(int offset, uint value)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, _length - sizeof(uint));
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(offset, sizeof(uint)), value);
    }

    public BodyWriter U8(byte value)
    {
        GetSpan(1)[0] = value;
        _length += 1;
        return this;
    }

    public BodyWriter U16(ushort value)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(GetSpan(2), value);
        _length += 2;
        return this;
    }

    public BodyWriter U32(uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(GetSpan(4), value);
        _length += 4;
        return this;
    }

    public BodyWriter I32(int value)
    {
        BinaryPrimitives.WriteInt32LittleEndian(GetSpan(4), value);
        _length += 4;
        return this;
    }

    public BodyWriter U64(ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(GetSpan(8), value);
        _length += 8;
        return this;
    }

    public BodyWriter I64(long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(GetSpan(8), value);
        _length += 8;
        return this;
    }

    public BodyWriter F64(double value)
    {
        BinaryPrimitives.WriteDoubleLittleEndian(GetSpan(8), value);
        _length += 8;
        return this;
    }

    public BodyWriter Bytes(ReadOnlySpan<byte> value)
    {
        value.CopyTo(GetSpan(value.Length));
        _length += value.Length;
        return this;
    }

    /// <summary>A u32 length followed by the bytes.</summary>
    public BodyWriter Blob(ReadOnlySpan<byte> value)
    {
        U32((uint)value.Length);
        return Bytes(value);
    }

    /// <summary>A u16 byte count followed by UTF-8.</summary>
    public BodyWriter Str(string value) => Str(value.AsSpan());

    /// <summary>A u16 byte count followed by UTF-8, from characters that need not be a string of their own.</summary>
    public BodyWriter Str(ReadOnlySpan<char> value)
    {
        // Short strings (keys, names) are transcoded in one pass into room for the worst case (3 bytes per UTF-16
        // unit) and the count written after; counting first would read every character twice.
        if (value.Length <= OnePassChars)
        {
            var span = GetSpan(sizeof(ushort) + (value.Length * 3));
            Utf8.FromUtf16(value, span[sizeof(ushort)..], out _, out var written);
            BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)written);
            _length += sizeof(ushort) + written;
            return this;
        }

        var count = Encoding.UTF8.GetByteCount(value);
        if (count > ushort.MaxValue)
        {
            throw new ArgumentException("String longer than 65535 UTF-8 bytes.", nameof(value));
        }

        U16((ushort)count);
        Encoding.UTF8.GetBytes(value, GetSpan(count));
        _length += count;
        return this;
    }

    /// <summary>Strings up to this many UTF-16 units take <see cref="Str(ReadOnlySpan{char})"/>'s one-pass path (at most 12 KiB of UTF-8).</summary>
    private const int OnePassChars = 4096;

    public BodyWriter Token(JobToken token)
    {
        token.Write(GetSpan(JobToken.Size));
        _length += JobToken.Size;
        return this;
    }
}
