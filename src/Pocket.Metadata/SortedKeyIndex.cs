namespace Pocket.Metadata;

/// <summary>
/// A job's objects in ordinal key order, kept as a list of sorted chunks (a two-level B+tree) so that a list can
/// seek to its start key in O(log n) and walk a page without allocating or looking each key up again: the index
/// holds the <see cref="ObjectEntry"/> itself, so a page reads key and size straight from it. SortedSet could not:
/// its range view counts every key in the range when it is made, so each page of a large prefix cost O(keys left).
/// Not thread-safe (the metadata server holds its lock); an enumerator is invalid once the index changes.
/// </summary>
internal sealed class SortedKeyIndex
{
    /// <summary>Keys per chunk: inserts move at most this many references, splits and merges move the chunk list.</summary>
    internal const int ChunkCapacity = 256;

    /// <summary>Every chunk holds at least one entry; chunk i's keys all sort before chunk i+1's.</summary>
    private readonly List<Chunk> _chunks = [];

    public int Count { get; private set; }

    /// <summary>Chunks in use: Count / ChunkCapacity rounded up for keys added in order.</summary>
    internal int ChunkCount => _chunks.Count;

    /// <summary>Adds <paramref name="entry"/>, or replaces the entry of the same key; false when it replaced one.</summary>
    public bool Set(ObjectEntry entry)
    {
        if (_chunks.Count == 0)
        {
            _chunks.Add(new Chunk());
        }

        var chunkIndex = FindChunk(entry.Key);
        var chunk = _chunks[chunkIndex];
        var i = chunk.Search(entry.Key);
        if (i >= 0)
        {
            chunk.Entries[i] = entry;
            return false;
        }

        i = ~i;
        if (chunk.Count == ChunkCapacity)
        {
            if (i == ChunkCapacity && chunkIndex == _chunks.Count - 1)
            {
                // An append past the last key (keys written in order): start a new chunk and leave this one full,
                // so ordered writes fill chunks instead of leaving a trail of half-full ones.
                chunk = new Chunk();
                _chunks.Add(chunk);
                i = 0;
            }
            else
            {
                const int half = ChunkCapacity / 2;
                var upper = new Chunk { Count = ChunkCapacity - half };
                Array.Copy(chunk.Entries, half, upper.Entries, 0, upper.Count);
                Array.Clear(chunk.Entries, half, ChunkCapacity - half);
                chunk.Count = half;
                _chunks.Insert(chunkIndex + 1, upper);
                if (i > half)
                {
                    chunk = upper;
                    i -= half;
                }
            }
        }

        Array.Copy(chunk.Entries, i, chunk.Entries, i + 1, chunk.Count - i);
        chunk.Entries[i] = entry;
        chunk.Count++;
        Count++;
        return true;
    }

    /// <summary>Removes the entry of <paramref name="key"/>; false when there was none.</summary>
    public bool Remove(string key)
    {
        if (_chunks.Count == 0)
        {
            return false;
        }

        var chunkIndex = FindChunk(key);
        var chunk = _chunks[chunkIndex];
        var i = chunk.Search(key);
        if (i < 0)
        {
            return false;
        }

        chunk.Count--;
        Array.Copy(chunk.Entries, i + 1, chunk.Entries, i, chunk.Count - i);
        chunk.Entries[chunk.Count] = null!;
        Count--;
        if (chunk.Count == 0)
        {
            _chunks.RemoveAt(chunkIndex);
        }
        else if (chunk.Count < ChunkCapacity / 4)
        {
            MergeWithNeighbour(chunkIndex);
        }

        return true;
    }

    /// <summary>The entries from the first key at or after <paramref name="key"/> (after it when <paramref name="exclusive"/>) to the end.</summary>
    public Enumerator From(string key, bool exclusive)
    {
        if (_chunks.Count == 0)
        {
            return new Enumerator(_chunks, 0, 0);
        }

        var chunkIndex = FindChunk(key);
        var chunk = _chunks[chunkIndex];
        var i = chunk.Search(key);
        i = i >= 0 ? (exclusive ? i + 1 : i) : ~i;
        if (i == chunk.Count)
        {
            chunkIndex++;
            i = 0;
        }

        return new Enumerator(_chunks, chunkIndex, i);
    }

    /// <summary>
    /// Folds a chunk that deletes left under a quarter full into a neighbour when both fit in three quarters of a
    /// chunk (room is left for inserts), so a chunk stays under a quarter full only beside one over half full and
    /// deletes cannot leave a trail of nearly empty chunks to walk.
    /// </summary>
    private void MergeWithNeighbour(int chunkIndex)
    {
        var chunk = _chunks[chunkIndex];
        if (chunkIndex > 0 && _chunks[chunkIndex - 1].Count + chunk.Count <= ChunkCapacity * 3 / 4)
        {
            var previous = _chunks[chunkIndex - 1];
            Array.Copy(chunk.Entries, 0, previous.Entries, previous.Count, chunk.Count);
            previous.Count += chunk.Count;
            _chunks.RemoveAt(chunkIndex);
        }
        else if (chunkIndex + 1 < _chunks.Count && _chunks[chunkIndex + 1].Count + chunk.Count <= ChunkCapacity * 3 / 4)
        {
            var next = _chunks[chunkIndex + 1];
            Array.Copy(next.Entries, 0, chunk.Entries, chunk.Count, next.Count);
            chunk.Count += next.Count;
            _chunks.RemoveAt(chunkIndex + 1);
        }
    }

    /// <summary>The last chunk whose first key is at or before <paramref name="key"/> (the first chunk when none is).</summary>
    private int FindChunk(string key)
    {
        int lo = 0, hi = _chunks.Count - 1;
        while (lo < hi)
        {
            var mid = (lo + hi + 1) >> 1;
            if (string.CompareOrdinal(_chunks[mid].Entries[0].Key, key) <= 0)
            {
                lo = mid;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return lo;
    }

    internal sealed class Chunk
    {
        public readonly ObjectEntry[] Entries = new ObjectEntry[ChunkCapacity];
        public int Count;

        /// <summary>The index of <paramref name="key"/>, or the bitwise complement of where it would go (as Array.BinarySearch).</summary>
        public int Search(string key)
        {
            int lo = 0, hi = Count - 1;
            while (lo <= hi)
            {
                var mid = (lo + hi) >> 1;
                var order = string.CompareOrdinal(Entries[mid].Key, key);
                if (order == 0)
                {
                    return mid;
                }

                if (order < 0)
                {
                    lo = mid + 1;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            return ~lo;
        }
    }

    /// <summary>Walks entries in key order; a struct so a page costs no allocation.</summary>
    public struct Enumerator
    {
        private readonly List<Chunk> _chunks;
        private int _chunk;
        private int _index;

        internal Enumerator(List<Chunk> chunks, int chunk, int index)
        {
            _chunks = chunks;
            _chunk = chunk;
            _index = index;
            Current = null!;
        }

        public ObjectEntry Current { get; private set; }

        public readonly Enumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            if (_chunk >= _chunks.Count)
            {
                return false;
            }

            var chunk = _chunks[_chunk];
            Current = chunk.Entries[_index];
            if (++_index == chunk.Count)
            {
                _chunk++;
                _index = 0;
            }

            return true;
        }
    }
}
