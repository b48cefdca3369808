using System.Runtime.InteropServices;

namespace Pocket.Storage;

/// <summary>
/// The DRAM tier: one anonymous mapping of the full capacity, asked for transparent huge pages and aligned to them.
/// The mapping costs nothing until touched: memory is faulted in where it is written, or ahead of writes by
/// <see cref="Populate"/> (a <see cref="SpaceReclaimer"/> keeps a headroom of it ready, since first touch of fresh memory
/// runs near 0.3-0.5 GB/s on our test machine while copies run near 14 GB/s), and handed back to the OS by
/// <see cref="Discard"/>. Nothing is allocated per request; memory use never exceeds the capacity.
/// </summary>
public sealed unsafe class NativeMemoryDevice : IBlockDevice
{
    /// <summary>Size of a transparent huge page: the mapping starts on one, so whole-page discards free whole pages.</summary>
    public const int HugePageSize = 2 << 20;

    private readonly IntPtr _mapping;
    private readonly nuint _mappedLength;
    private readonly byte* _base;
    private readonly Thread? _toucher;
    private volatile bool _disposed;
    private long _touched;
    private bool _populateUnsupported;

    /// <param name="capacity">Bytes the device holds.</param>
    /// <param name="preTouch">
    /// Fault the whole capacity in at once, on a background thread (the behaviour before memory followed use: an empty
    /// node then holds its capacity in memory). Off by default: a <see cref="SpaceReclaimer"/> keeps a bounded headroom.
    /// </param>
    public NativeMemoryDevice(long capacity, bool preTouch = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        Capacity = capacity;

        // One spare huge page lets the data start on a huge-page boundary; untouched, it costs nothing.
        _mappedLength = (nuint)(capacity + HugePageSize);
        var address = AnonymousMemory.MapUnreserved(_mappedLength);
        if (address == AnonymousMemory.MapFailed)
        {
            throw new OutOfMemoryException($"cannot map {capacity} bytes for the DRAM tier (errno {Marshal.GetLastPInvokeError()})");
        }

        _mapping = address;
        _base = (byte*)(((long)address + HugePageSize - 1) & -(long)HugePageSize);
        _ = AnonymousMemory.madvise((IntPtr)_base, (nuint)capacity, AnonymousMemory.MadvHugePage);
        if (preTouch)
        {
            _toucher = new Thread(() => Populate(0, Capacity)) { IsBackground = true, Name = "pocket dram pre-touch", Priority = ThreadPriority.BelowNormal };
            _toucher.Start();
        }
    }

    public string Kind => "dram";

    public long Capacity { get; }

    public bool IsDirect => true;

    /// <summary>Bytes faulted in ahead of use so far (<see cref="Populate"/>, or the whole-capacity pre-touch), counted each time.</summary>
    public long TouchedBytes => Interlocked.Read(ref _touched);

    /// <summary>Bytes handed back to the OS so far (<see cref="Discard"/>), counted each time.</summary>
    public long DiscardedBytes => Interlocked.Read(ref _discarded);

    private long _discarded;

    /// <summary>Bytes of the device's memory resident now (mincore over the mapping; a diagnostic, not for a hot path).</summary>
    public long ResidentBytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var page = Environment.SystemPageSize;
            var pages = (Capacity + page - 1) / page;
            const long window = 1 << 20;
            var vector = new byte[Math.Min(pages, window)];
            long resident = 0;
            for (long first = 0; first < pages; first += window)
            {
                var count = Math.Min(window, pages - first);
                fixed (byte* v = vector)
                {
                    if (AnonymousMemory.mincore((IntPtr)(_base + (first * page)), (nuint)(count * page), v) != 0)
                    {
                        return -1;
                    }
                }

                for (var i = 0; i < count; i++)
                {
                    resident += vector[i] & 1;
                }
            }

            return resident * page;
        }
    }

    public Span<byte> GetSpan(long offset, int length)
    {
        CheckRange(offset, length);
        return new Span<byte>(_base + offset, length);
    }

    public void Write(long offset, ReadOnlySpan<byte> data) => data.CopyTo(GetSpan(offset, data.Length));

    public void Read(long offset, Span<byte> destination) => GetSpan(offset, destination.Length).CopyTo(destination);

    /// <summary>MADV_DONTNEED: the pages go back to the OS at once (the resident set shrinks) and read as zeros after.</summary>
    public bool Discard(long offset, long length)
    {
        CheckRange(offset, length);
        if (length == 0)
        {
            return true;
        }

        // madvise works on whole pages: the pages inside the range go back; the partial pages at its ends keep their
        // memory and are cleared by hand, so the whole range reads as zeros as the contract says. (Past the capacity is
        // the mapping's spare, unused, so the last page goes whole.)
        var page = (long)Environment.SystemPageSize;
        var start = (offset + page - 1) & -page;
        var end = offset + length == Capacity ? offset + length : (offset + length) & -page;
        if (end > start)
        {
            if (AnonymousMemory.madvise((IntPtr)(_base + start), (nuint)(end - start), AnonymousMemory.MadvDontNeed) != 0)
            {
                return false;
            }

            new Span<byte>(_base + offset, (int)(start - offset)).Clear();
            new Span<byte>(_base + end, (int)(offset + length - end)).Clear();
        }
        else
        {
            new Span<byte>(_base + offset, (int)length).Clear();
        }

        Interlocked.Add(ref _discarded, length);
        return true;
    }

    /// <summary>
    /// Faults [offset, offset+length) in (MADV_POPULATE_WRITE, which leaves the contents as they are, so it is safe while
    /// requests write there; where the kernel lacks it, an atomic add of zero per page does the same).
    /// </summary>
    public void Populate(long offset, long length)
    {
        CheckRange(offset, length);
        const long step = HugePageSize;
        for (var at = offset; at < offset + length && !_disposed; at += step)
        {
            var piece = (nuint)Math.Min(step, offset + length - at);
            if (Volatile.Read(ref _populateUnsupported) || AnonymousMemory.madvise((IntPtr)(_base + at), piece, AnonymousMemory.MadvPopulateWrite) != 0)
            {
                Volatile.Write(ref _populateUnsupported, true);
                for (long page = 0; page < (long)piece && !_disposed; page += 4096)
                {
                    Interlocked.Add(ref *(int*)(_base + at + page), 0);
                }
            }

            Interlocked.Add(ref _touched, (long)piece);
        }
    }

    private void CheckRange(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || length < 0 || offset > Capacity - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the device (capacity {Capacity})");
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _toucher?.Join();
        _ = AnonymousMemory.munmap(_mapping, _mappedLength);
    }
}
