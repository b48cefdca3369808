using System.Numerics;
using System.Runtime.InteropServices;

namespace Pocket.Metadata;

/// <summary>
/// The bytes of objects kept inline. An object above half a page gets a slot of whole pages in native memory, carved
/// from slabs of <see cref="SlotsPerSlab"/> slots of one size, and a freed slot is reused by the next put of that size
/// while its pages are still faulted in: with a fresh 64 KiB array per put, first-touch page faults (5.3 per put) and
/// the copy into new memory took 56 % of the server's CPU at 64 connections, and the pinned-heap garbage only a full
/// collection reclaimed, so memory freed by deletes was never given back (docs/benchmarks.md, "Inline objects in
/// reused slots"). Smaller objects
/// (a page would be more than twice their size) and larger ones keep an array each, as before.
/// <para>
/// Free slots go back to the system (MADV_DONTNEED; a slab with no object left is unmapped) once their slab has had no
/// put or free for <see cref="IdleRelease"/> (<see cref="Trim"/> from a timer), or at once when a job ends
/// (<see cref="Trim"/> with idleOnly false), except for <see cref="WarmHeadroom"/> kept for the next puts.
/// </para>
/// <para>
/// A slot is reused only once nobody reads it: a get counts itself as a reader of the object's block under the
/// metadata lock (<see cref="InlineBlock.BeginRead"/>) and leaves after its reply has copied the bytes
/// (<see cref="InlineBlock.EndRead"/>); a delete marks the block freed, and whichever of the two comes last hands the
/// slot back. Without that, a delete and a put on another event loop could overwrite bytes a reply is still sending.
/// </para>
/// </summary>
internal sealed unsafe class InlineStore : IDisposable
{
    /// <summary>Slots of one slab: its free slots are one bit each of a <see cref="ulong"/>.</summary>
    public const int SlotsPerSlab = 64;

    /// <summary>The largest object that gets a slot (the protocol's inline limit); anything larger keeps an array.</summary>
    public const int MaxSlotBytes = 64 << 10;

    /// <summary>Free, faulted-in slot bytes a trim leaves for the next puts (a new job's first puts then fault nothing).</summary>
    public const long WarmHeadroom = 4L << 20;

    /// <summary>How long a slab's free slots stay faulted in after its last put or free before a timed trim gives them back.</summary>
    public static readonly TimeSpan IdleRelease = TimeSpan.FromSeconds(10);

    private const ulong AllSlots = ulong.MaxValue;

    private readonly Lock _lock = new();
    private readonly Lock _trimLock = new();
    private readonly TimeProvider _time;
    private readonly int _page = Environment.SystemPageSize;
    private readonly int _maxSlotPages;
    private readonly long _budget;
    private readonly List<Slab>[] _available;
    private readonly List<Slab> _slabs = [];

    // A trim's work, kept between trims (under the trim lock): the timer trims every second on every metadata server,
    // and a tick with nothing to give back allocates nothing.
    private readonly List<(Slab Slab, ulong Slots)> _discard = [];
    private readonly List<Slab> _unmap = [];
    private long _mapped;
    private long _freeResident;
    private long _slotBytesInUse;
    private long _released;
    private bool _disposed;

    /// <param name="inlineCapacity">
    /// The server's bound on inline bytes. Slots are mapped up to twice it (a slot is less than twice its object) plus
    /// one slab of every size; past that a put gets no slot (<see cref="Store"/> returns null) and goes to the nodes.
    /// </param>
    public InlineStore(long inlineCapacity, TimeProvider time)
    {
        _time = time;
        _maxSlotPages = MaxSlotBytes / _page;
        _available = new List<Slab>[Math.Max(_maxSlotPages, 0)];
        for (var i = 0; i < _available.Length; i++)
        {
            _available[i] = [];
        }

        long slabOfEverySize = 0;
        for (var pages = 1; pages <= _maxSlotPages; pages++)
        {
            slabOfEverySize += (long)pages * _page * SlotsPerSlab;
        }

        _budget = inlineCapacity <= 0 ? 0 : (2 * inlineCapacity) + slabOfEverySize;
    }

    /// <summary>Bytes of slabs mapped now (address space; resident only where touched).</summary>
    public long MappedBytes
    {
        get
        {
            lock (_lock)
            {
                return _mapped;
            }
        }
    }

    /// <summary>Bytes of free slots that may still be faulted in: reused by the next puts, or given back by a trim.</summary>
    public long FreeResidentBytes
    {
        get
        {
            lock (_lock)
            {
                return _freeResident;
            }
        }
    }

    /// <summary>Bytes of slots holding objects (or being read after their delete) now.</summary>
    public long SlotBytesInUse
    {
        get
        {
            lock (_lock)
            {
                return _slotBytesInUse;
            }
        }
    }

    /// <summary>Bytes given back to the system so far (discarded free slots and unmapped slabs), counted each time.</summary>
    public long ReleasedBytes => Interlocked.Read(ref _released);

    /// <summary>
    /// A block holding a copy of <paramref name="data"/>: a reused or new slot, or an array of its own for sizes that get
    /// none. Null when no slot of that size is free and no slab may be mapped within the budget.
    /// </summary>
    public InlineBlock? Store(ReadOnlySpan<byte> data)
    {
        if (data.Length <= _page / 2 || data.Length > _maxSlotPages * _page)
        {
            // Kept on the pinned object heap: a stored object lives until it is deleted, and young-generation
            // collections would otherwise copy every recent put (the pauses land in the tail latency of puts).
            var array = GC.AllocateUninitializedArray<byte>(data.Length, pinned: true);
            data.CopyTo(array);
            return new InlineBlock(array);
        }

        var pages = (data.Length + _page - 1) / _page;
        Slab slab;
        int index;
        lock (_lock)
        {
            if (_disposed || !TryTake(pages, out slab!, out index))
            {
                return null;
            }
        }

        // The copy runs outside the lock: the slot is this put's alone until it is stored.
        var block = new InlineBlock(slab, index, data.Length);
        data.CopyTo(new Span<byte>(block.Pointer, data.Length));
        return block;
    }

    /// <summary>A slot nobody holds or reads any more becomes free, its pages kept for the next put of its size.</summary>
    internal void Return(Slab slab, int index)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            var bit = 1UL << index;
            if (slab.Free == 0)
            {
                AddAvailable(slab);
            }

            slab.Free |= bit;
            slab.Resident |= bit;
            slab.LastUse = _time.GetTimestamp();
            _freeResident += slab.SlotBytes;
            _slotBytesInUse -= slab.SlotBytes;
        }
    }

    /// <summary>
    /// Gives free slots' memory back to the system beyond <see cref="WarmHeadroom"/>: those of slabs untouched for
    /// <see cref="IdleRelease"/> (<paramref name="idleOnly"/>, the timer), or all (a job ended). Slabs with no object
    /// left are unmapped. The system calls run outside the store's lock (the slots meanwhile count as taken), so puts
    /// and gets do not wait for them. Returns the bytes given back.
    /// </summary>
    public long Trim(bool idleOnly)
    {
        lock (_trimLock)
        {
            var work = _discard;
            var unmap = _unmap;
            lock (_lock)
            {
                if (_disposed)
                {
                    return 0;
                }

                var now = _time.GetTimestamp();
                for (var i = _slabs.Count - 1; i >= 0; i--)
                {
                    var slab = _slabs[i];
                    if (idleOnly && _time.GetElapsedTime(slab.LastUse, now) < IdleRelease)
                    {
                        continue;
                    }

                    var warm = (long)BitOperations.PopCount(slab.Resident) * slab.SlotBytes;
                    if (slab.Free == AllSlots && (warm == 0 || _freeResident - warm >= WarmHeadroom))
                    {
                        unmap.Add(Forget(i));
                        continue;
                    }

                    if (warm == 0 || _freeResident - warm < WarmHeadroom)
                    {
                        continue;
                    }

                    // Taken while discarded: neither a put nor another trim touches them until they are free again.
                    var slots = slab.Resident;
                    slab.Free &= ~slots;
                    slab.Resident = 0;
                    if (slab.Free == 0)
                    {
                        RemoveAvailable(slab);
                    }

                    _freeResident -= warm;
                    work.Add((slab, slots));
                }
            }

            long released = 0;
            foreach (var slab in unmap)
            {
                _ = AnonymousMemory.munmap((IntPtr)slab.Base, (nuint)slab.Bytes);
                released += slab.Bytes;
            }

            foreach (var (slab, slots) in work)
            {
                released += Discard(slab, slots);
            }

            if (work.Count > 0)
            {
                lock (_lock)
                {
                    foreach (var (slab, slots) in work)
                    {
                        if (slab.Free == 0)
                        {
                            AddAvailable(slab);
                        }

                        slab.Free |= slots;
                    }
                }
            }

            work.Clear();
            unmap.Clear();
            Interlocked.Add(ref _released, released);
            return released;
        }
    }

    /// <summary>
    /// Unmaps every slab. Only once no request runs or can run again (the listener's
    /// <see cref="Pocket.Networking.FrameServer.Stopped"/>): blocks point into the slabs, and a get copying from one (or a
    /// put copying into one) after the unmap would read or write unmapped memory, which ends the process. A handler that
    /// never returns leaves them mapped until the process exits.
    /// </summary>
    public void Dispose()
    {
        lock (_trimLock)
        {
            lock (_lock)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
                foreach (var slab in _slabs)
                {
                    _ = AnonymousMemory.munmap((IntPtr)slab.Base, (nuint)slab.Bytes);
                }

                _slabs.Clear();
                _mapped = 0;
            }
        }
    }

    /// <summary>A free slot of <paramref name="pages"/> pages, a faulted-in one where the slab has one (the caller holds the lock).</summary>
    private bool TryTake(int pages, out Slab slab, out int index)
    {
        var available = _available[pages - 1];
        if (available.Count == 0 && !TryMap(pages))
        {
            slab = null!;
            index = -1;
            return false;
        }

        slab = available[^1];
        var warm = slab.Free & slab.Resident;
        index = BitOperations.TrailingZeroCount(warm != 0 ? warm : slab.Free);
        var bit = 1UL << index;
        slab.Free &= ~bit;
        if ((slab.Resident & bit) != 0)
        {
            slab.Resident &= ~bit;
            _freeResident -= slab.SlotBytes;
        }

        if (slab.Free == 0)
        {
            RemoveAvailable(slab);
        }

        slab.LastUse = _time.GetTimestamp();
        _slotBytesInUse += slab.SlotBytes;
        return true;
    }

    /// <summary>Maps a new slab of <paramref name="pages"/>-page slots within the budget, unmapping empty slabs first if it needs their room.</summary>
    private bool TryMap(int pages)
    {
        var bytes = (long)pages * _page * SlotsPerSlab;
        if (_mapped + bytes > _budget)
        {
            // Rare (sizes changed, and empty slabs of other sizes wait for their idle trim): a system call or two under the lock.
            for (var i = _slabs.Count - 1; i >= 0 && _mapped + bytes > _budget; i--)
            {
                if (_slabs[i].Free == AllSlots)
                {
                    var empty = Forget(i);
                    _ = AnonymousMemory.munmap((IntPtr)empty.Base, (nuint)empty.Bytes);
                    Interlocked.Add(ref _released, empty.Bytes);
                }
            }

            if (_mapped + bytes > _budget)
            {
                return false;
            }
        }

        var address = AnonymousMemory.MapUnreserved((nuint)bytes);
        if (address == AnonymousMemory.MapFailed)
        {
            return false;
        }

        var slab = new Slab(this, (byte*)address, pages * _page);
        _slabs.Add(slab);
        AddAvailable(slab);
        _mapped += bytes;
        return true;
    }

    /// <summary>MADV_DONTNEED over each run of <paramref name="slots"/>: their pages go back now and read as zeros after.</summary>
    private static long Discard(Slab slab, ulong slots)
    {
        long released = 0;
        while (slots != 0)
        {
            var first = BitOperations.TrailingZeroCount(slots);
            var run = BitOperations.TrailingZeroCount(~(slots >> first));
            var length = (long)run * slab.SlotBytes;
            _ = AnonymousMemory.madvise((IntPtr)(slab.Base + ((long)first * slab.SlotBytes)), (nuint)length, AnonymousMemory.MadvDontNeed);
            released += length;
            slots = run == 64 ? 0 : slots & ~(((1UL << run) - 1) << first);
        }

        return released;
    }

    /// <summary>Takes the empty slab at <paramref name="index"/> out of the store's books (the caller holds the lock, then unmaps it).</summary>
    private Slab Forget(int index)
    {
        var slab = _slabs[index];
        _slabs.RemoveAt(index);
        RemoveAvailable(slab);
        _mapped -= slab.Bytes;
        _freeResident -= (long)BitOperations.PopCount(slab.Resident) * slab.SlotBytes;
        return slab;
    }

    private void AddAvailable(Slab slab)
    {
        var list = _available[slab.Pages - 1];
        slab.AvailableAt = list.Count;
        list.Add(slab);
    }

    private void RemoveAvailable(Slab slab)
    {
        if (slab.AvailableAt < 0)
        {
            return;
        }

        var list = _available[slab.Pages - 1];
        var last = list[^1];
        list[slab.AvailableAt] = last;
        last.AvailableAt = slab.AvailableAt;
        list.RemoveAt(list.Count - 1);
        slab.AvailableAt = -1;
    }

    /// <summary><see cref="SlotsPerSlab"/> slots of one size in one mapping; its fields change under the store's lock only.</summary>
    internal sealed class Slab(InlineStore store, byte* @base, int slotBytes)
    {
        public InlineStore Store { get; } = store;

        public byte* Base { get; } = @base;

        public int SlotBytes { get; } = slotBytes;

        public int Pages => SlotBytes / Store._page;

        public long Bytes => (long)SlotBytes * SlotsPerSlab;

        /// <summary>Free slots, a bit each.</summary>
        public ulong Free { get; set; } = AllSlots;

        /// <summary>Free slots whose pages were touched since they were last given back.</summary>
        public ulong Resident { get; set; }

        /// <summary>The time of its last put or free (<see cref="TimeProvider.GetTimestamp"/>).</summary>
        public long LastUse { get; set; }

        /// <summary>Its place in the list of slabs with a free slot of its size, or -1 when it has none.</summary>
        public int AvailableAt { get; set; } = -1;
    }
}

/// <summary>
/// One inline object's bytes: a slot of an <see cref="InlineStore"/> slab, or an array. A slot's readers and its free
/// are counted in one field (readers, plus <see cref="Freed"/> once the object is gone), so the slot returns to the store
/// exactly once, when the last of them is done.
/// </summary>
internal sealed unsafe class InlineBlock
{
    private const int Freed = 1 << 30;
    private readonly byte[]? _array;
    private readonly InlineStore.Slab? _slab;
    private readonly int _index;
    private int _state;

    public InlineBlock(byte[] array)
    {
        _array = array;
        Length = array.Length;
    }

    internal InlineBlock(InlineStore.Slab slab, int index, int length)
    {
        _slab = slab;
        _index = index;
        Length = length;
        Pointer = slab.Base + ((long)index * slab.SlotBytes);
    }

    /// <summary>The object's size.</summary>
    public int Length { get; }

    /// <summary>The slot's first byte (null for an array).</summary>
    internal byte* Pointer { get; }

    /// <summary>The bytes. For a slot, valid only while the caller holds the metadata lock or is a counted reader.</summary>
    public ReadOnlySpan<byte> Span => _array is not null ? _array : new ReadOnlySpan<byte>(Pointer, Length);

    /// <summary>Counts a reader (under the metadata lock, where the object is still stored): the slot is not reused until <see cref="EndRead"/>.</summary>
    public void BeginRead()
    {
        if (_slab is not null)
        {
            Interlocked.Increment(ref _state);
        }
    }

    /// <summary>The reader is done with the bytes; the last one out of a freed block hands its slot back.</summary>
    public void EndRead()
    {
        if (_slab is not null && Interlocked.Decrement(ref _state) == Freed)
        {
            _slab.Store.Return(_slab, _index);
        }
    }

    /// <summary>The object is gone (deleted, or its put refused): the slot returns now, or when its last reader is done.</summary>
    public void Release()
    {
        if (_slab is not null && Interlocked.Add(ref _state, Freed) == Freed)
        {
            _slab.Store.Return(_slab, _index);
        }
    }
}
