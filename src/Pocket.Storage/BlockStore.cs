namespace Pocket.Storage;

/// <summary>
/// A device cut into fixed blocks, each stamped with the allocation generation that last wrote it.
/// The metadata server allocates; this store only enforces what a grant says: a write may claim blocks
/// for a newer generation, a read must match the generation exactly. A block being written carries a
/// busy bit so a read never returns half-written data and two writers never interleave. Devices rely on that:
/// every write to <see cref="Device"/> must be made between <see cref="BeginWrite"/> and <see cref="EndWrite"/>,
/// which is what lets a device rewrite a partial sector without a lock (<see cref="IBlockDevice.Write"/>).
/// </summary>
public sealed class BlockStore : IDisposable
{
    private const uint BusyBit = 0x8000_0000;
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
    /// <see cref="BlockResult.Stale"/> when a newer allocation owns a block or another write is under way.
    /// </summary>
    public BlockResult BeginWrite(long offset, int length, uint generation)
    {
        if (generation == 0 || generation >= BusyBit)
        {
            return BlockResult.Stale;
        }

        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            while (true)
            {
                var current = Volatile.Read(ref _generations[block]);
                if ((current & BusyBit) != 0 || current > generation)
                {
                    // Undo the claims made so far.
                    for (var undo = first; undo < block; undo++)
                    {
                        Release(undo, generation);
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
            Release(block, generation);
        }

        Interlocked.Add(ref _bytesWritten, length);
    }

    /// <summary>Clears a block's busy bit, unless <see cref="Reset"/> forgot the block meanwhile: then it stays empty.</summary>
    private void Release(long block, uint generation)
    {
        if (Interlocked.CompareExchange(ref _generations[block], generation, generation | BusyBit) != (generation | BusyBit))
        {
            Volatile.Write(ref _generations[block], 0);
        }
    }

    /// <summary>True when every block under the range holds exactly <paramref name="generation"/> and none is being written.</summary>
    public bool Holds(long offset, int length, uint generation)
    {
        var first = offset / BlockSize;
        var last = (offset + length - 1) / BlockSize;
        for (var block = first; block <= last; block++)
        {
            if (Volatile.Read(ref _generations[block]) != generation)
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
    /// Forgets every allocation (the node starts over as a new, empty node). A block whose write is still under way
    /// stays busy, owned by no generation, until that write ends and leaves it empty: a new allocation can never
    /// write a block an old write is still writing.
    /// </summary>
    public void Reset()
    {
        for (long block = 0; block < _generations.Length; block++)
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
    }

    public void Dispose() => Device.Dispose();
}
