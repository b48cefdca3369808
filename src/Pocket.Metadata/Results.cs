using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>
/// How an operation of the metadata state ended: <see cref="Status.Ok"/> (the default), or a status and the message the
/// client reads. A struct, so success costs nothing on the request path; messages are made only on failure.
/// </summary>
internal readonly record struct Outcome(Status Status, string? Message)
{
    public static Outcome Ok => default;

    public bool IsOk => Status == Status.Ok;

    public static Outcome Fail(Status status, string message) => new(status, message);
}

/// <summary>An <see cref="Outcome"/> and, when it is Ok, a value.</summary>
internal readonly record struct Result<T>(Status Status, string? Message, T Value)
{
    public bool IsOk => Status == Status.Ok;

    public Outcome Outcome => new(Status, Message);

    public static implicit operator Result<T>(T value) => new(Status.Ok, null, value);

    public static implicit operator Result<T>(Outcome failure) => new(failure.Status, failure.Message, default!);
}

/// <summary>
/// What a get hands the handler: the object's size and either the requested range of an inline object or the extents
/// to grant. An inline object's <see cref="Block"/> counts the get as a reader (its slot is not reused meanwhile, even if
/// the object is deleted), so its bytes are read after the lock is released; the handler ends the read with
/// <see cref="InlineBlock.EndRead"/> once the reply has them. <see cref="Release"/> is non-zero after a delete-after-read
/// of a large object; the reader releases it with an abort when done.
/// </summary>
internal readonly record struct ObjectRead(long Size, InlineBlock? Block, int Offset, int Count, Extent[] Extents, ulong Release)
{
    /// <summary>True for an inline object (its bytes are <see cref="Inline"/>).</summary>
    public bool IsInline => Block is not null;

    /// <summary>The requested range of an inline object's bytes, valid until <see cref="InlineBlock.EndRead"/>.</summary>
    public ReadOnlySpan<byte> Inline => Block is null ? default : Block.Span.Slice(Offset, Count);
}

/// <summary>A new write handle and the extents reserved for its size hint (a copy, safe to read outside the lock).</summary>
internal readonly record struct OpenWrite(ulong Handle, Extent[] Extents);

/// <summary>What a lookup reports: the object's size, whether it is inline, its put flags and its extents with their nodes' states.</summary>
internal readonly record struct ObjectInfo(long Size, bool IsInline, FrameFlags Flags, Protocol.Messages.LookupExtent[] Extents);

/// <summary>
/// What deregistering a job freed (objects, data bytes and object memory, <see cref="MetadataState.ObjectMemoryOf"/>), and
/// whether keep-after-job objects outlive it (then they expire later).
/// </summary>
internal readonly record struct JobRemoval(long Objects, long Bytes, bool Retired)
{
    public long Memory { get; init; }
}

/// <summary>The end of one list page: how many entries were written and the start-after of the next page (empty when none).</summary>
internal readonly record struct ListPageEnd(int Count, string? Last, int LastLength)
{
    public ReadOnlySpan<char> Next => Last.AsSpan(0, LastLength);
}

/// <summary>
/// Receives the entries of a list page as the state walks its key index. Called under the metadata lock: an
/// implementation only copies the entry (into a reply), never blocks.
/// </summary>
internal interface IListSink
{
    void Entry(ReadOnlySpan<char> key, long size, bool isPrefix);
}
