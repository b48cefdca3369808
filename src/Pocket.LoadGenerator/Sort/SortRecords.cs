using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Pocket.LoadGenerator.Sort;

/// <summary>
/// An order-independent fingerprint of a set of records: how many, and the sum and xor of a 64-bit hash of each.
/// Equal fingerprints before and after the sort mean (short of a hash collision) the same multiset of records, in
/// whatever order and however they were split.
/// </summary>
internal readonly record struct RecordChecksum(long Count, ulong Sum, ulong Xor)
{
    public static RecordChecksum Empty => default;

    public RecordChecksum Add(ulong hash) => new(Count + 1, unchecked(Sum + hash), Xor ^ hash);

    public RecordChecksum Combine(RecordChecksum other) => new(Count + other.Count, unchecked(Sum + other.Sum), Xor ^ other.Xor);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Count} records, sum {Sum:x16}, xor {Xor:x16}");
}

/// <summary>
/// The records of the sort, as in the sort benchmarks (gensort): 100 bytes each, the first 10 the key, compared as
/// unsigned bytes. Everything here works on spans; no I/O.
/// </summary>
internal static class SortRecords
{
    public const int RecordSize = 100;
    public const int KeySize = 10;

    /// <summary>Fills <paramref name="destination"/> (whole records) with random records, the same for the same seed.</summary>
    public static void Generate(Span<byte> destination, ulong seed)
    {
        var state = seed;
        var words = MemoryMarshal.Cast<byte, ulong>(destination);
        for (var i = 0; i < words.Length; i++)
        {
            words[i] = SplitMix64(ref state);
        }

        var tail = destination[(words.Length * sizeof(ulong))..];
        for (var i = 0; i < tail.Length; i++)
        {
            tail[i] = (byte)SplitMix64(ref state);
        }
    }

    /// <summary>
    /// The reducer of a key: key ranges of equal width, so bucket r holds only keys below bucket r+1's and the
    /// reducers' outputs, concatenated in order, are sorted.
    /// </summary>
    public static int Bucket(ReadOnlySpan<byte> record, int buckets) =>
        (int)(((ulong)BinaryPrimitives.ReadUInt32BigEndian(record) * (ulong)buckets) >> 32);

    /// <summary>Negative, zero or positive as the key of <paramref name="a"/> sorts before, with or after that of <paramref name="b"/>.</summary>
    public static int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => a[..KeySize].SequenceCompareTo(b[..KeySize]);

    /// <summary>A 64-bit hash of one whole record.</summary>
    public static ulong Hash(ReadOnlySpan<byte> record)
    {
        var h = 0x9E3779B97F4A7C15UL ^ RecordSize;
        for (var i = 0; i + sizeof(ulong) <= RecordSize; i += sizeof(ulong))
        {
            h = Mix(h ^ BinaryPrimitives.ReadUInt64LittleEndian(record[i..]));
        }

        h = Mix(h ^ BinaryPrimitives.ReadUInt32LittleEndian(record[(RecordSize - sizeof(uint))..]));
        return Finish(h);
    }

    /// <summary>The checksum of every record in <paramref name="records"/>.</summary>
    public static RecordChecksum Checksum(ReadOnlySpan<byte> records)
    {
        var checksum = RecordChecksum.Empty;
        for (var offset = 0; offset + RecordSize <= records.Length; offset += RecordSize)
        {
            checksum = checksum.Add(Hash(records.Slice(offset, RecordSize)));
        }

        return checksum;
    }

    /// <summary>The records of <paramref name="records"/> sorted by key, in a new array.</summary>
    public static byte[] Sort(ReadOnlySpan<byte> records)
    {
        var count = records.Length / RecordSize;
        var entries = new SortEntry[count];
        for (var i = 0; i < count; i++)
        {
            var record = records.Slice(i * RecordSize, RecordSize);
            entries[i] = new SortEntry(BinaryPrimitives.ReadUInt64BigEndian(record), BinaryPrimitives.ReadUInt16BigEndian(record[8..]), i);
        }

        Array.Sort(entries);
        var sorted = new byte[count * RecordSize];
        for (var i = 0; i < count; i++)
        {
            records.Slice(entries[i].Index * RecordSize, RecordSize).CopyTo(sorted.AsSpan(i * RecordSize));
        }

        return sorted;
    }

    /// <summary>Throws unless <paramref name="length"/> is whole records.</summary>
    public static long CountOf(long length, string key) =>
        length % RecordSize == 0 ? length / RecordSize : throw new InvalidDataException($"'{key}' is {length} bytes, not a whole number of {RecordSize}-byte records");

    private static ulong SplitMix64(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Mix(ulong x) => BitOperations.RotateLeft(x * 0xBF58476D1CE4E5B9UL, 31) * 0x94D049BB133111EBUL;

    private static ulong Finish(ulong h)
    {
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDUL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53UL;
        return h ^ (h >> 33);
    }

    /// <summary>A record's 10-byte key as two big-endian numbers (so numeric order is byte order) and where the record is.</summary>
    private readonly record struct SortEntry(ulong High, ushort Low, int Index) : IComparable<SortEntry>
    {
        public int CompareTo(SortEntry other)
        {
            var byHigh = High.CompareTo(other.High);
            return byHigh != 0 ? byHigh : Low.CompareTo(other.Low);
        }
    }
}
