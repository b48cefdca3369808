using System.Numerics;

namespace Pocket.Metadata.Placement;

/// <summary>
/// Free-block bitmap of one storage node. Allocates runs of contiguous blocks at the lowest free space that holds the
/// whole run (first fit), so freed space is used again before new space is touched: a dram node's memory and a disk
/// node's file then follow the data actually stored (the node keeps its lowest free space ready and gives the rest
/// back). Accounting is exact: every block is either free or owned by exactly one extent.
/// </summary>
internal sealed class BlockAllocator
{
    /// <summary>Free runs looked at for one that holds a whole request before the lowest free run is taken instead.</summary>
    private const int MaxRunsSearched = 64;

    private readonly ulong[] _used;

    // No block below this one is free, so searches start here.
    private long _lowestFree;

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

    /// <summary>
    /// Takes up to <paramref name="maxBlocks"/> contiguous free blocks: the lowest run that holds them all, or, when the
    /// free space is cut into shorter runs (the first <see cref="MaxRunsSearched"/> of them), the lowest free run.
    /// Returns the first block and count, or count 0 when full.
    /// </summary>
    public (long First, long Count) AllocateRun(long maxBlocks)
    {
        if (FreeBlocks == 0 || maxBlocks <= 0)
        {
            return (0, 0);
        }

        (long First, long Count)? lowest = null;
        var from = _lowestFree;
        for (var searched = 0; searched < MaxRunsSearched && FindFree(from) is { } start; searched++)
        {
            var count = 1L;
            while (count < maxBlocks && start + count < BlockCount && !IsUsed(start + count))
            {
                count++;
            }

            if (lowest is null)
            {
                lowest = (start, count);
                _lowestFree = start;
            }

            if (count == maxBlocks)
            {
                return Take(start, count);
            }

            from = start + count;
        }

        return lowest is { } run ? Take(run.First, run.Count) : (0, 0);
    }

    private (long First, long Count) Take(long first, long count)
    {
        Set(first, count, true);
        if (first == _lowestFree)
        {
            _lowestFree = first + count;
        }

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
        _lowestFree = Math.Min(_lowestFree, first);
    }
}
