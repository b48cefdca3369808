using System.Numerics;

namespace Pocket.Metadata.Placement;

/// <summary>
/// Free-block bitmap of one storage node. Allocates runs of contiguous blocks at the lowest free space that holds the
/// whole run (first fit), so freed space is used again before new space is touched: a dram node's memory and a disk
/// node's file then follow the data actually stored (the node keeps its lowest free space ready and gives the rest
/// back). Accounting is exact: every block is either free or owned by exactly one extent.
/// <para>
/// A node serving several metadata servers gives each a share of its <see cref="Segments"/> segments (a mask,
/// bit s for segment s); the allocator allocates only inside the segments it holds (the others count as used and
/// are never handed out), gives a segment back only when none of its blocks is allocated, and takes new segments
/// from the node. A node with one metadata server holds every segment.
/// </para>
/// </summary>
internal sealed class BlockAllocator
{
    /// <summary>Free runs looked at for one that holds a whole request before the lowest free run is taken instead.</summary>
    private const int MaxRunsSearched = 64;

    /// <summary>Segments a node's blocks are cut into (the unit of a share): one bit each in a u64 mask.</summary>
    public const int Segments = 64;

    /// <summary>The mask of a share of every segment.</summary>
    public const ulong AllSegments = ulong.MaxValue;

    private readonly ulong[] _used;

    // No block below this one is free, so searches start here.
    private long _lowestFree;

    public BlockAllocator(long blockCount, ulong share = AllSegments)
    {
        BlockCount = blockCount;
        SegmentBlocks = Math.Max(1, (blockCount + Segments - 1) / Segments);
        _used = new ulong[(blockCount + 63) / 64];
        FreeBlocks = blockCount;
        if (share != AllSegments)
        {
            // Every block starts used; the share's segments are then freed, so the count covers them only.
            Set(0, blockCount, true);
            Share = 0;
            Add(share);
        }
        else
        {
            Share = AllSegments;
            ShareBlocks = blockCount;
        }
    }

    public long BlockCount { get; }

    /// <summary>Blocks per segment (the last segment may be shorter, or empty on a node of fewer than 64 blocks).</summary>
    public long SegmentBlocks { get; }

    /// <summary>Free blocks inside the share.</summary>
    public long FreeBlocks { get; private set; }

    /// <summary>The segments this allocator may allocate in.</summary>
    public ulong Share { get; private set; }

    /// <summary>Blocks inside the share (what the node's capacity is for this metadata server).</summary>
    public long ShareBlocks { get; private set; }

    /// <summary>The segment block <paramref name="block"/> lies in.</summary>
    public int SegmentOf(long block) => (int)(block / SegmentBlocks);

    private long SegmentStart(int segment) => Math.Min(segment * SegmentBlocks, BlockCount);

    private long SegmentLength(int segment) => Math.Min((segment + 1) * SegmentBlocks, BlockCount) - SegmentStart(segment);

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
    /// Blocks outside the share are marked used, so a run never leaves it. Returns the first block and count, or count
    /// 0 when full.
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
            if (!IsUsed(b) || (Share != AllSegments && (Share & (1UL << SegmentOf(b))) == 0))
            {
                throw new InvalidOperationException($"block {b} freed twice (or outside this server's share)");
            }
        }

        Set(first, count, false);
        _lowestFree = Math.Min(_lowestFree, first);
    }

    /// <summary>True when no block of the segment is allocated (it may be given up).</summary>
    private bool IsEmpty(int segment)
    {
        var start = SegmentStart(segment);
        var end = start + SegmentLength(segment);
        for (var b = start; b < end; b++)
        {
            if (IsUsed(b))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Gives up to <paramref name="count"/> held segments that hold no allocated block (the highest first, so the low
    /// end, where allocation starts, stays packed); returns their mask. Their blocks are never allocated here again
    /// unless <see cref="Add"/> gives them back.
    /// </summary>
    public ulong Release(int count)
    {
        ulong released = 0;
        for (var segment = Segments - 1; segment >= 0 && count > 0; segment--)
        {
            if ((Share & (1UL << segment)) == 0 || !IsEmpty(segment))
            {
                continue;
            }

            Set(SegmentStart(segment), SegmentLength(segment), true);
            Share &= ~(1UL << segment);
            ShareBlocks -= SegmentLength(segment);
            released |= 1UL << segment;
            count--;
        }

        return released;
    }

    /// <summary>Takes the segments of <paramref name="mask"/> into the share (segments already held are left as they are).</summary>
    public void Add(ulong mask)
    {
        for (var added = mask & ~Share; added != 0; added &= added - 1)
        {
            var segment = BitOperations.TrailingZeroCount(added);
            Set(SegmentStart(segment), SegmentLength(segment), false);
            _lowestFree = Math.Min(_lowestFree, SegmentStart(segment));
            Share |= 1UL << segment;
            ShareBlocks += SegmentLength(segment);
        }
    }

    /// <summary>True when the block is allocated here (inside the share and not free); for tests.</summary>
    internal bool IsAllocated(long block) => (Share & (1UL << SegmentOf(block))) != 0 && IsUsed(block);
}
