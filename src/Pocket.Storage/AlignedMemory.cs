using System.Buffers;
using System.Runtime.InteropServices;

namespace Pocket.Storage;

/// <summary>
/// Native memory whose start is aligned to <see cref="Alignment"/> bytes (<see cref="NativeMemory.AlignedAlloc"/>),
/// so a request from it that is also aligned in offset and length goes to an unbuffered device without a bounce
/// copy (<see cref="IBlockDevice.Alignment"/>). Never moves, so pinning is free. Freed by <see cref="IDisposable.Dispose"/>
/// (once; later use throws <see cref="ObjectDisposedException"/>); whoever allocates it must dispose it: there is
/// no finalizer, since a span over the memory may outlive every reference to this object.
/// </summary>
public sealed unsafe class AlignedMemory : MemoryManager<byte>
{
    private byte* _pointer;

    public AlignedMemory(int length, int alignment)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
        {
            throw new ArgumentException($"alignment {alignment} must be a power of two", nameof(alignment));
        }

        Length = length;
        Alignment = alignment;
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)length, (nuint)alignment);
    }

    /// <summary>Bytes held.</summary>
    public int Length { get; }

    /// <summary>The alignment of the first byte.</summary>
    public int Alignment { get; }

    /// <summary>True once the memory is freed.</summary>
    public bool IsDisposed => _pointer is null;

    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_pointer is null, this);
        return new Span<byte>(_pointer, Length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(_pointer is null, this);
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, Length);
        return new MemoryHandle(_pointer + elementIndex);
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        var pointer = _pointer;
        _pointer = null;
        if (pointer is not null)
        {
            NativeMemory.AlignedFree(pointer);
        }
    }
}
