namespace Pocket.Storage;

/// <summary>
/// A device cut into fixed blocks, each stamped with the allocation generation that last wrote it.
/// The metadata server allocates; this store only enforces what a grant says: a write may claim blocks
/// for a newer generation, or for its own generation while the block is not sealed; a read must match the
/// generation exactly and the block must not be forgotten. The metadata server seals an object's blocks when it
/// commits (<see cref="Seal"/>: the write grants die, reads go on) and forgets them when it frees them
/// (<see cref="Forget"/>: the grants of that generation die, and only a newer allocation may write). A block being
/// written carries a busy bit so a read never returns half-written data and two writers never interleave. Devices rely on that:
/// every write to <see cref="Device"/> must be made between <see cref="BeginWrite"/> and <see cref="EndWrite"/>,
/// which is what lets a device rewrite a partial sector without a lock (<see cref="IBlockDevice.Write"/>).
/// </summary>
public sealed class BlockStore : IDisposable
{
    private const uint BusyBit = 0x8000_0000;
    private const uint SealedBit = 0x4000_0000;
    private const uint ForgottenBit = 0x2000_0000;
    private const uint GenerationMask = 0x1FFF_FFFF;

    // A block whose space is being given back (Discard): busy and forgotten but not sealed, a combination nothing else
    // makes (a forget always seals). Writers and marks wait it out; it lasts one device call.
    private const uint DiscardingMark = BusyBit | ForgottenBit;

    /// <summary>The largest generation a block can carry (the top bits are the busy, sealed and forgotten flags).</summary>
    public const uint MaxGeneration = GenerationMask;

    private readonly uint[] _generations;

    public BlockStore(IBlockDevice device, int blockSize)
    {
        if (blockSize < 4096 || (blockSize & (blockSize - 1)) != 0)
        {
            throw new ArgumentException($"block size {blockSize} must be a power of two of at least 4096", nameof(blockSize));
        }

        // One writer per block (the busy bit) is one writer per sector only while no sector spans two blocks.
        if (blockSize % device.Alignment != 0)
        {
            throw new ArgumentException($"block size {blockSize} must be a multiple of the device's sector alignment {device.Alignment}", nameof(blockSize));
        }

        Device = device;
        BlockSize = blockSize;
        BlockCount = device.Capacity / blockSize;
        _generations = new uint[BlockCount];
    }

    public IBlockDevice Device { get; }

    public int BlockSize { get; }

    public long BlockCount { get; }

    public long Capacity => BlockCount * BlockSize;

    private long _bytesWritten;
    private long _bytesRead;

    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Checks that [offset, offset+length) is block-aligned and inside the store.</summary>
    public bool IsValidExtent(long offset, long length) =>
        offset >= 0 && length > 0 && offset % BlockSize == 0 && offset <= Capacity - length;

    /// <summary>
    /// Marks the blocks under [offset, offset+length) busy for <paramref name="generation"/>. Fails with
    /// <see cref="BlockResult.Stale"/> when a newer allocation owns a block, the generation's blocks were sealed or
    /// forgotten, or another write is under way.
    /// </summary>
    public BlockResult BeginWrite(long offset, int length, uint generation)
    {
        if (generation == 0 || generation > MaxGeneration)
        {
            return BlockResult.Stale;
        }

        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            var spin = default(SpinWait);
            while (true)
            {
                var current = Volatile.Read(ref _generations[block]);
                if (IsDiscarding(current))
                {
                    spin.SpinOnce();
                    continue;
                }

                var owner = current & GenerationMask;
                if ((current & BusyBit) != 0 || owner > generation || (owner == generation && (current & (SealedBit | ForgottenBit)) != 0))
                {
                    // Undo the claims made so far.
                    for (var undo = first; undo < block; undo++)
                    {
                        Release(undo);
                    }

                    return BlockResult.Stale;
                }

                if (Interlocked.CompareExchange(ref _generations[block], generation | BusyBit, current) == current)
                {
                    break;
                }
            }
        }

        return BlockResult.Ok;
    }

    public void EndWrite(long offset, int length, uint generation)
    {
        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            Release(block);
        }

        Interlocked.Add(ref _bytesWritten, length);
        Wrote?.Invoke(length);
    }

    /// <summary>Called after every write with its length (<see cref="SpaceReclaimer"/> refills its headroom); must be cheap.</summary>
    internal Action<int>? Wrote { get; set; }

    /// <summary>Called after every <see cref="Forget"/> with its range (<see cref="SpaceReclaimer"/> gives the space back).</summary>
    internal Action<long, long>? Forgot { get; set; }

    /// <summary>Called after <see cref="Reset"/> (every block is free again).</summary>
    internal Action? WasReset { get; set; }

    /// <summary>
    /// Clears a block's busy bit. Whatever happened to the block meanwhile stays: <see cref="Reset"/> left it owned by
    /// no generation (it ends empty), <see cref="Seal"/> or <see cref="Forget"/> left their flag.
    /// </summary>
    private void Release(long block)
    {
        while (true)
        {
            var current = Volatile.Read(ref _generations[block]);
            if (Interlocked.CompareExchange(ref _generations[block], current & ~BusyBit, current) == current)
            {
                return;
            }
        }
    }

    /// <summary>
    /// True when every block under the range holds exactly <paramref name="generation"/> (sealed or not), none is being
    /// written and none was forgotten.
    /// </summary>
    public bool Holds(long offset, int length, uint generation)
    {
        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            if ((Volatile.Read(ref _generations[block]) & ~SealedBit) != generation)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Copies a range out and then re-checks the generation, so a concurrent reuse of the space is never
    /// returned as data (the caller gets <see cref="BlockResult.Stale"/> instead).
    /// </summary>
    public BlockResult Read(long offset, Span<byte> destination, uint generation)
    {
        if (!Holds(offset, destination.Length, generation))
        {
            return BlockResult.Stale;
        }

        Device.Read(offset, destination);
        if (!Holds(offset, destination.Length, generation))
        {
            return BlockResult.Stale;
        }

        Interlocked.Add(ref _bytesRead, destination.Length);
        return BlockResult.Ok;
    }

    /// <summary>
    /// Seals the blocks under the range for <paramref name="generation"/> (its object was committed): they stay readable,
    /// and no grant of that generation writes them again. Blocks the writer never wrote are sealed too (stamped with the
    /// generation), so the write grant cannot fill them in later; blocks a newer allocation owns are left alone.
    /// </summary>
    public void Seal(long offset, long length, uint generation) => Mark(offset, length, generation, SealedBit);

    /// <summary>
    /// Forgets the blocks under the range for <paramref name="generation"/> (the space was freed): reads and writes of
    /// that generation fail from now on, and only a newer allocation may write the blocks. Blocks a newer allocation owns
    /// are left alone, so a late or repeated forget never harms the space's next owner.
    /// </summary>
    public void Forget(long offset, long length, uint generation)
    {
        Mark(offset, length, generation, SealedBit | ForgottenBit);
        if (IsValidExtent(offset, length))
        {
            Forgot?.Invoke(offset, length);
        }
    }

    private void Mark(long offset, long length, uint generation, uint flags)
    {
        if (generation == 0 || generation > MaxGeneration || !IsValidExtent(offset, length))
        {
            return;
        }

        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            var spin = default(SpinWait);
            while (true)
            {
                var current = Volatile.Read(ref _generations[block]);
                if (IsDiscarding(current))
                {
                    spin.SpinOnce();
                    continue;
                }

                if ((current & GenerationMask) > generation)
                {
                    break;
                }

                // A write under way keeps its busy bit (and finishes; its release leaves the flags in place).
                var kept = (current & GenerationMask) == generation ? current & (SealedBit | ForgottenBit) : 0;
                var marked = generation | flags | kept | (current & BusyBit);
                if (marked == current || Interlocked.CompareExchange(ref _generations[block], marked, current) == current)
                {
                    break;
                }
            }
        }
    }

    /// <summary>
    /// Forgets every allocation (the node starts over as a new, empty node). A block whose write is still under way
    /// stays busy, owned by no generation, until that write ends and leaves it empty: a new allocation can never
    /// write a block an old write is still writing.
    /// </summary>
    public void Reset() => Reset(0, BlockCount);

    /// <summary>
    /// Forgets every allocation of <paramref name="count"/> blocks from <paramref name="first"/>, as <see cref="Reset()"/>
    /// does for all: a node serving several metadata servers resets a share's blocks before another server takes them,
    /// so the new holder's generations start afresh.
    /// </summary>
    public void Reset(long first, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(first);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(first + count, BlockCount);
        for (var block = first; block < first + count; block++)
        {
            while (true)
            {
                var current = Volatile.Read(ref _generations[block]);
                var forgotten = current & BusyBit;
                if (current == forgotten || Interlocked.CompareExchange(ref _generations[block], forgotten, current) == current)
                {
                    break;
                }
            }
        }

        WasReset?.Invoke();
    }

    /// <summary>True when no allocation holds the block: never written, or forgotten and not being written.</summary>
    internal bool IsFree(long block)
    {
        var current = Volatile.Read(ref _generations[block]);
        return current == 0 || (current & (BusyBit | ForgottenBit)) == ForgottenBit;
    }

    private static bool IsDiscarding(uint value) => (value & (BusyBit | SealedBit | ForgottenBit)) == DiscardingMark;

    /// <summary>
    /// Gives the space of the free blocks among [<paramref name="firstBlock"/>, +<paramref name="blockCount"/>) back to
    /// the device (<see cref="IBlockDevice.Discard"/>), in runs of at most <paramref name="maxRunBlocks"/>. Each run's
    /// blocks are claimed first, so no write lands in them while the device discards (a write that comes meanwhile waits
    /// for the run, then goes ahead); blocks that are live are skipped. Returns the bytes the device gave back.
    /// </summary>
    internal long DiscardFree(long firstBlock, long blockCount, long maxRunBlocks)
    {
        long discarded = 0;
        var end = Math.Min(firstBlock + blockCount, BlockCount);
        var block = firstBlock;
        while (block < end)
        {
            var run = 0L;
            while (block + run < end && run < maxRunBlocks && TryClaimFree(block + run))
            {
                run++;
            }

            if (run > 0)
            {
                try
                {
                    if (Device.Discard(block * BlockSize, run * BlockSize))
                    {
                        discarded += run * BlockSize;
                    }
                }
                finally
                {
                    for (var b = block; b < block + run; b++)
                    {
                        ReleaseDiscard(b);
                    }
                }

                block += run;
            }
            else
            {
                block++;
            }
        }

        return discarded;
    }

    private bool TryClaimFree(long block)
    {
        var current = Volatile.Read(ref _generations[block]);
        return (current == 0 || (current & (BusyBit | ForgottenBit)) == ForgottenBit)
            && Interlocked.CompareExchange(ref _generations[block], (current & GenerationMask) | DiscardingMark, current) == current;
    }

    /// <summary>Ends a discard: the block is forgotten again (empty if it was), unless a reset emptied it meanwhile.</summary>
    private void ReleaseDiscard(long block)
    {
        while (true)
        {
            var current = Volatile.Read(ref _generations[block]);
            var owner = current & GenerationMask;
            var released = !IsDiscarding(current) ? current & ~BusyBit : owner == 0 ? 0 : owner | SealedBit | ForgottenBit;
            if (Interlocked.CompareExchange(ref _generations[block], released, current) == current)
            {
                return;
            }
        }
    }

    public void Dispose() => Device.Dispose();
}
