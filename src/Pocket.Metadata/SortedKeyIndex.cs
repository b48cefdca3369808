namespace Pocket.Metadata;

/// <summary>
/// A job's keys in ordinal order, kept as a list of sorted chunks (a two-level B+tree) so that a list can seek to its
/// start key in O(log n) and walk a page without allocating. SortedSet could not: its range view counts every key in
/// the range when it is made, so each page of a large prefix cost O(keys left). Not thread-safe (the metadata server
/// holds its lock); an enumerator is invalid once the index changes.
/// </summary>
internal sealed class SortedKeyIndex
{
    /// <summary>Keys per chunk: inserts move at most this many references, splits move the chunk list.</summary>
    private const int ChunkCapacity = 256;

    /// <summary>Every chunk holds at least one key; chunk i's keys all sort before chunk i+1's.</summary>
    private readonly List<Chunk> _chunks = [];

    public int Count { get; private set; }

    /// <summary>Adds <paramref name="key"/>; false when it is already there.</summary>
    public bool Add(string key)
    {
        if (_chunks.Count == 0)
        {
            _chunks.Add(new Chunk());
        }

        var chunkIndex = FindChunk(key);
        var chunk = _chunks[chunkIndex];
        var i = Array.BinarySearch(chunk.Keys, 0, chunk.Count, key, StringComparer.Ordinal);
        if (i >= 0)
        {
            return false;
        }

        i = ~i;
        if (chunk.Count == ChunkCapacity)
        {
            const int half = ChunkCapacity / 2;
            var upper = new Chunk { Count = ChunkCapacity - half };
            Array.Copy(chunk.Keys, half, upper.Keys, 0, upper.Count);
            Array.Clear(chunk.Keys, half, ChunkCapacity - half);
            chunk.Count = half;
            _chunks.Insert(chunkIndex + 1, upper);
            if (i > half)
            {
                chunk = upper;
                i -= half;
            }
        }

        Array.Copy(chunk.Keys, i, chunk.Keys, i + 1, chunk.Count - i);
        chunk.Keys[i] = key;
        chunk.Count++;
        Count++;
        return true;
    }

    /// <summary>Removes <paramref name="key"/>; false when it was not there.</summary>
    public bool Remove(string key)
    {
        if (_chunks.Count == 0)
        {
            return false;
        }

        var chunkIndex = FindChunk(key);
        var chunk = _chunks[chunkIndex];
        var i = Array.BinarySearch(chunk.Keys, 0, chunk.Count, key, StringComparer.Ordinal);
        if (i < 0)
        {
            return false;
        }

        chunk.Count--;
        Array.Copy(chunk.Keys, i + 1, chunk.Keys, i, chunk.Count - i);
        chunk.Keys[chunk.Count] = null!;
        if (chunk.Count == 0)
        {
            _chunks.RemoveAt(chunkIndex);
        }

        Count--;
        return true;
    }

    /// <summary>The keys from the first one at or after <paramref name="key"/> (after it when <paramref name="exclusive"/>) to the end.</summary>
    public Enumerator From(string key, bool exclusive)
    {
        if (_chunks.Count == 0)
        {
            return new Enumerator(_chunks, 0, 0);
        }

        var chunkIndex = FindChunk(key);
        var chunk = _chunks[chunkIndex];
        var i = Array.BinarySearch(chunk.Keys, 0, chunk.Count, key, StringComparer.Ordinal);
        i = i >= 0 ? (exclusive ? i + 1 : i) : ~i;
        if (i == chunk.Count)
        {
            chunkIndex++;
            i = 0;
        }

        return new Enumerator(_chunks, chunkIndex, i);
    }

    /// <summary>The last chunk whose first key is at or before <paramref name="key"/> (the first chunk when none is).</summary>
    private int FindChunk(string key)
    {
        int lo = 0, hi = _chunks.Count - 1;
        while (lo < hi)
        {
            var mid = (lo + hi + 1) >> 1;
            if (string.CompareOrdinal(_chunks[mid].Keys[0], key) <= 0)
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
        public readonly string[] Keys = new string[ChunkCapacity];
        public int Count;
    }

    /// <summary>Walks keys in order; a struct so a page costs no allocation.</summary>
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

        public string Current { get; private set; }

        public readonly Enumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            if (_chunk >= _chunks.Count)
            {
                return false;
            }

            var chunk = _chunks[_chunk];
            Current = chunk.Keys[_index];
            if (++_index == chunk.Count)
            {
                _chunk++;
                _index = 0;
            }

            return true;
        }
    }
}
