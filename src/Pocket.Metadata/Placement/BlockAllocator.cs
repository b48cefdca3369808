using System.Numerics;

namespace Pocket.Metadata.Placement;

/// <summary>
/// Free-block bitmap of one storage node. Allocates runs of contiguous blocks, scanning on from where the
/// last allocation ended so consecutive allocations stay contiguous. Accounting is exact: every block is
/// either free or owned by exactly one extent.
/// </summary>
internal sealed class BlockAllocator
{
    private readonly ulong[] _used;
    private long _cursor;

    public BlockAllocator(long blockCount)
    {
        BlockCount = blockCount;
        FreeBlocks = blockCount;
        _used = new ulong[(blockCount + 63) / 64];
    }

    public long BlockCount { get; }

    public long FreeBlocks { get; private set; }

    private bool IsUsed(long block) => (_used[block >> 6] & (1UL << (int)(block & 63))) != 0;

    private void Set(long first, long count, bool used)
    {
        for (var b = first; b < first + count; b++)
        {
            if (used)
            {
                _used[b >> 6] |= 1UL << (int)(b & 63);
            }
            else
            {
                _used[b >> 6] &= ~(1UL << (int)(b & 63));
            }
        }

        FreeBlocks += used ? -count : count;
    }

    /// <summary>Takes up to <paramref name="maxBlocks"/> contiguous free blocks; returns the first block and count, or count 0 when full.</summary>
    public (long First, long Count) AllocateRun(long maxBlocks)
    {
        if (FreeBlocks == 0 || maxBlocks <= 0)
        {
            return (0, 0);
        }

        var start = FindFree(_cursor) ?? FindFree(0);
        if (start is not { } first)
        {
            return (0, 0);
        }

        var count = 1L;
        while (count < maxBlocks && first + count < BlockCount && !IsUsed(first + count))
        {
            count++;
        }

        Set(first, count, true);
        _cursor = first + count >= BlockCount ? 0 : first + count;
        return (first, count);
    }

    private long? FindFree(long from)
    {
        for (var word = from >> 6; word < _used.Length; word++)
        {
            var free = ~_used[word];
            if (word == from >> 6)
            {
                free &= ulong.MaxValue << (int)(from & 63);
            }

            if (free != 0)
            {
                var block = (word << 6) + BitOperations.TrailingZeroCount(free);
                return block < BlockCount ? block : null;
            }
        }

        return null;
    }

    public void Free(long first, long count)
    {
        for (var b = first; b < first + count; b++)
        {
            if (!IsUsed(b))
            {
                throw new InvalidOperationException($"block {b} freed twice");
            }
        }

        Set(first, count, false);
    }
}
