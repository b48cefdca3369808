using System.Buffers;
using System.Text;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

/// <summary>
/// One page of a listing as the metadata server sent it, from <see cref="PocketJob.ListPageAsync"/>: entries are
/// read from the reply buffer as they are enumerated, keys as UTF-8 bytes, so walking a page allocates nothing
/// (<see cref="ListPageEntry.Key"/> makes a string when one is wanted). Dispose it to give the buffer back; an
/// entry's <see cref="ListPageEntry.KeyUtf8"/> is valid until then.
/// </summary>
public sealed class ListPage : IDisposable
{
    private byte[]? _buffer;
    private readonly bool _rented;
    private readonly int _nextOffset;
    private readonly int _length;

    /// <summary>Takes <paramref name="buffer"/>'s first <paramref name="length"/> bytes (a list reply); checks every entry once.</summary>
    internal ListPage(byte[] buffer, int length, bool rented)
    {
        _buffer = buffer;
        _length = length;
        _rented = rented;
        if (!ListReply.TryRead(buffer.AsSpan(0, length), out var reply))
        {
            Dispose();
            throw Malformed();
        }

        // The entries end where the next page's start-after begins: its u16 length, then its bytes to the end.
        _nextOffset = sizeof(uint) + reply.Entries.Length;
        Count = reply.Count;
        HasMore = reply.NextStartAfterUtf8.Length > 0;
    }

    /// <summary>Entries on this page.</summary>
    public int Count { get; }

    /// <summary>True when entries follow this page: pass <see cref="NextStartAfter"/> as the next page's start-after.</summary>
    public bool HasMore { get; }

    /// <summary>Where the next page starts ("" when this is the last page).</summary>
    public string NextStartAfter => Encoding.UTF8.GetString(Body[(_nextOffset + sizeof(ushort))..]);

    private ReadOnlySpan<byte> Body => (_buffer ?? throw new ObjectDisposedException(nameof(ListPage))).AsSpan(0, _length);

    /// <summary>Walks the entries in key order.</summary>
    public Enumerator GetEnumerator() => new(Body[sizeof(uint).._nextOffset]);

    /// <summary>Gives the reply buffer back; entries read from the page are invalid afterwards.</summary>
    public void Dispose()
    {
        var buffer = _buffer;
        _buffer = null;
        if (buffer is not null && _rented)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    internal static InvalidDataException Malformed() => new("The metadata server sent a malformed list reply.");

    /// <summary>Reads entries one after another from the checked reply.</summary>
    public ref struct Enumerator
    {
        private ListReply.Enumerator _entries;

        internal Enumerator(ReadOnlySpan<byte> entries)
        {
            _entries = new ListReply.Enumerator(entries);
            Current = default;
        }

        /// <summary>The entry the enumerator is on.</summary>
        public ListPageEntry Current { get; private set; }

        /// <summary>Moves to the next entry; false after the last.</summary>
        public bool MoveNext()
        {
            if (!_entries.MoveNext())
            {
                return false;
            }

            var entry = _entries.Current;
            Current = new ListPageEntry(entry.KeyUtf8, entry.Size, entry.IsPrefix);
            return true;
        }
    }
}

/// <summary>One entry of a <see cref="ListPage"/>: an object, or with delimited listing a "directory" ending in '/'.</summary>
public readonly ref struct ListPageEntry(ReadOnlySpan<byte> keyUtf8, long size, bool isPrefix)
{
    /// <summary>The key as UTF-8, straight from the reply buffer.</summary>
    public ReadOnlySpan<byte> KeyUtf8 { get; } = keyUtf8;

    /// <summary>The object's size (0 for a directory).</summary>
    public long Size { get; } = size;

    /// <summary>True for a "directory" of a delimited listing.</summary>
    public bool IsPrefix { get; } = isPrefix;

    /// <summary>The key as a string (decoded on each call).</summary>
    public string Key => Encoding.UTF8.GetString(KeyUtf8);

    /// <summary>The entry as a <see cref="ListEntry"/>, which outlives the page.</summary>
    public ListEntry ToListEntry() => new(Key, Size, IsPrefix);
}
