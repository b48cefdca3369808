namespace Pocket.Protocol.Messages;

/// <summary>List: prefix, start-after ("" for the first key), limit i32, delimited u8.</summary>
public readonly ref struct ListRequest
{
    private ListRequest(ReadOnlySpan<byte> prefixUtf8, ReadOnlySpan<byte> startAfterUtf8, int limit, bool delimited)
    {
        PrefixUtf8 = prefixUtf8;
        StartAfterUtf8 = startAfterUtf8;
        Limit = limit;
        Delimited = delimited;
    }

    public ReadOnlySpan<byte> PrefixUtf8 { get; }

    public ReadOnlySpan<byte> StartAfterUtf8 { get; }

    public string Prefix => Key.ToString(PrefixUtf8);

    public string StartAfter => Key.ToString(StartAfterUtf8);

    public int Limit { get; }

    public bool Delimited { get; }

    public static void Write(BodyWriter body, string prefix, string startAfter, int limit, bool delimited) =>
        body.Str(prefix).Str(startAfter).I32(limit).U8(delimited ? (byte)1 : (byte)0);

    public static bool TryRead(ReadOnlySpan<byte> body, out ListRequest request)
    {
        var reader = new BodyReader(body);
        var prefix = reader.StrUtf8();
        var startAfter = reader.StrUtf8();
        var limit = reader.I32();
        var delimited = reader.U8() != 0;
        request = new ListRequest(prefix, startAfter, limit, delimited);
        return !reader.Failed && reader.AtEnd;
    }
}

/// <summary>One entry of a <see cref="ListReply"/>: a key (UTF-8), its size, and whether it is a folded "directory".</summary>
public readonly ref struct ListReplyEntry(ReadOnlySpan<byte> keyUtf8, long size, bool isPrefix)
{
    public ReadOnlySpan<byte> KeyUtf8 { get; } = keyUtf8;

    public long Size { get; } = size;

    public bool IsPrefix { get; } = isPrefix;
}

/// <summary>
/// List's reply: count u32, entries (key, size i64, is-prefix u8), then the start-after of the next page ("" when
/// done). Written as the server walks its index: <see cref="Begin"/>, <see cref="WriteEntry"/> per entry, <see cref="End"/>.
/// </summary>
public readonly ref struct ListReply
{
    /// <summary>The smallest entry: key length u16, size i64, kind u8.</summary>
    private const int MinEntrySize = sizeof(ushort) + sizeof(long) + sizeof(byte);

    private ListReply(int count, ReadOnlySpan<byte> entries, ReadOnlySpan<byte> nextUtf8)
    {
        Count = count;
        Entries = entries;
        NextStartAfterUtf8 = nextUtf8;
    }

    public int Count { get; }

    /// <summary>The entries' bytes, for <see cref="Enumerator"/>.</summary>
    public ReadOnlySpan<byte> Entries { get; }

    /// <summary>Where the next page starts ("" when this is the last page).</summary>
    public ReadOnlySpan<byte> NextStartAfterUtf8 { get; }

    /// <summary>Reserves the count; returns where it sits, for <see cref="End"/>.</summary>
    public static int Begin(BodyWriter body)
    {
        var at = body.Length;
        body.U32(0);
        return at;
    }

    public static void WriteEntry(BodyWriter body, ReadOnlySpan<char> key, long size, bool isPrefix) =>
        body.Str(key).I64(size).U8(isPrefix ? (byte)1 : (byte)0);

    /// <summary>Patches the count in and writes the next page's start-after.</summary>
    public static void End(BodyWriter body, int begin, int count, ReadOnlySpan<char> next)
    {
        body.PatchU32(begin, (uint)count);
        body.Str(next);
    }

    /// <summary>Checks every entry once; the entries are then read with <see cref="GetEnumerator"/>.</summary>
    public static bool TryRead(ReadOnlySpan<byte> body, out ListReply reply)
    {
        reply = default;
        var reader = new BodyReader(body);
        var count = reader.U32();

        // Each entry takes at least MinEntrySize bytes: a larger count is a lie.
        if (reader.Failed || count > (uint)body.Length / MinEntrySize)
        {
            return false;
        }

        for (var i = 0; i < count && !reader.Failed; i++)
        {
            reader.StrUtf8();
            reader.I64();
            reader.U8();
        }

        var entriesEnd = body.Length - reader.Remaining;
        var next = reader.StrUtf8();
        if (reader.Failed || !reader.AtEnd)
        {
            return false;
        }

        reply = new ListReply((int)count, body[sizeof(uint)..entriesEnd], next);
        return true;
    }

    public Enumerator GetEnumerator() => new(Entries);

    /// <summary>Reads entries one after another from checked entry bytes.</summary>
    public ref struct Enumerator
    {
        private BodyReader _reader;

        public Enumerator(ReadOnlySpan<byte> entries)
        {
            _reader = new BodyReader(entries);
            Current = default;
        }

        public ListReplyEntry Current { get; private set; }

        public bool MoveNext()
        {
            if (_reader.Remaining == 0)
            {
                return false;
            }

            Current = new ListReplyEntry(_reader.StrUtf8(), _reader.I64(), _reader.U8() != 0);
            return !_reader.Failed;
        }
    }
}
