using System.Buffers;
using System.Runtime.CompilerServices;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

public sealed partial class PocketJob
{
    /// <summary>A granted extent and where it sits in the object.</summary>
    internal readonly record struct PlacedExtent(ExtentGrant Grant, long ObjectOffset);

    /// <summary>What a get returned: the bytes of a small object, or the extents of a large one.</summary>
    internal sealed record Layout(long Size, byte[]? Inline, List<PlacedExtent> Extents, ulong ReleaseHandle);

    private static List<PlacedExtent> ToPlaced(GrantList grants, long startOffset)
    {
        var extents = new List<PlacedExtent>(grants.Count);
        var offset = startOffset;
        for (var i = 0; i < grants.Count; i++)
        {
            var grant = grants[i];
            extents.Add(new PlacedExtent(grant, offset));
            offset += grant.Length;
        }

        return extents;
    }

    private static PocketException MalformedGrants() => new(Status.BadRequest, "malformed extent list from the metadata server");

    private async ValueTask<(ulong Handle, List<PlacedExtent> Extents)> CreateAsync(string key, long sizeHint, PutFlags flags, CancellationToken cancellationToken)
    {
        // Once sent, its reply is awaited whatever the token: a handle the caller never saw could not be aborted, and
        // would hold the key and its space until the connection closes. The caller's next step sees the token and aborts.
        cancellationToken.ThrowIfCancellationRequested();
        var request = new BodyWriter();
        CreateRequest.Write(request, key, sizeHint);
        var reply = await _client.SendMetadataAsync(Opcode.Create, ToFrameFlags(flags) | _client.NodeAddressesFlag, Token, request.WrittenMemory, CancellationToken.None, jobId: Id).ConfigureAwait(false);
        if (!CreateReply.TryRead(reply.Body, out var created))
        {
            throw MalformedGrants();
        }

        _client.LearnNodes(created.Nodes);
        return (created.Handle, ToPlaced(created.Grants, 0));
    }

    private async ValueTask<List<PlacedExtent>> AllocateAsync(ulong handle, long bytes, long objectOffset, CancellationToken cancellationToken)
    {
        var request = new BodyWriter();
        AllocateRequest.Write(request, handle, bytes);
        var reply = await _client.SendMetadataAsync(Opcode.Allocate, FrameFlags.None, Token, request.WrittenMemory, cancellationToken, jobId: Id).ConfigureAwait(false);
        return AllocateReply.TryRead(reply.Body, out var grants) ? ToPlaced(grants, objectOffset) : throw MalformedGrants();
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask CommitAsync(ulong handle, long size, CancellationToken cancellationToken)
    {
        var request = BodyWriter.Rent();
        try
        {
            CommitRequest.Write(request, handle, size);
            await _client.SendMetadataAsync(Opcode.Commit, FrameFlags.None, Token, request.WrittenMemory, cancellationToken, jobId: Id).ConfigureAwait(false);
        }
        finally
        {
            BodyWriter.Return(request);
        }
    }

    private async ValueTask AbortQuietlyAsync(ulong handle)
    {
        try
        {
            var request = new BodyWriter(sizeof(ulong));
            AbortRequest.Write(request, handle);
            await _client.SendMetadataAsync(Opcode.Abort, FrameFlags.None, Token, request.WrittenMemory, CancellationToken.None, jobId: Id).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or ObjectDisposedException)
        {
            // The metadata server also drops a connection's open writes when the connection ends.
        }
    }

    private async ValueTask ReleaseAsync(Layout layout)
    {
        if (layout.ReleaseHandle != 0)
        {
            await AbortQuietlyAsync(layout.ReleaseHandle).ConfigureAwait(false);
        }
    }

    private async ValueTask<Layout> GetLayoutAsync(string key, long offset, long length, GetFlags flags, CancellationToken cancellationToken)
    {
        var scratch = ArrayPool<byte>.Shared.Rent(GetReplyScratch);
        var request = BodyWriter.Rent();
        try
        {
            var reply = await SendGetAsync(key, offset, length, flags, request, scratch, cancellationToken).ConfigureAwait(false);
            var body = GetReplyBody(reply, scratch, out var inline, out var size);
            if (inline is not null)
            {
                return new Layout(size, inline, [], 0);
            }

            var got = ReadGetReply(body);
            return got.IsInline ? new Layout(got.Size, got.Inline.ToArray(), [], 0) : ToLayout(got);
        }
        finally
        {
            BodyWriter.Return(request);
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// Sends a Get whose request is encoded into <paramref name="request"/> (the caller's, returned by the caller once
    /// the reply is in) and returns its OK reply; an OK reply that fits is read into <paramref name="replyInto"/>, a
    /// longer one's kind and size too, with the rest in an array of its own (see <see cref="GetReplyBody"/>). The small get into a caller's buffer does this itself (see
    /// <see cref="StartGetAsync"/>): one async level less on the path a fan-in client runs per request.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FrameReply> SendGetAsync(string key, long offset, long length, GetFlags flags, BodyWriter request, byte[] replyInto, CancellationToken cancellationToken)
    {
        var send = StartGetAsync(key, offset, length, flags, request, replyInto, InlineGetReplyPrefix, cancellationToken, out var sent);
        try
        {
            return PocketClient.Checked(await send.ConfigureAwait(false));
        }
        catch (ConnectionLostException lost) when (sent.Connection is not null)
        {
            return await ResendGetAsync(lost, sent, request, replyInto).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The body of a Get reply sent with <see cref="InlineGetReplyPrefix"/> as its head (see
    /// <see cref="FrameConnection.SendAsync"/>). An inline object longer than the reply buffer comes back as an array of
    /// just its bytes: that array is <paramref name="inline"/> (the caller's result, not copied) and
    /// <paramref name="size"/> the object's size. Any other reply's body is returned whole (an extents reply longer than
    /// the buffer, one with many grants, is put back together).
    /// </summary>
    private static ReadOnlySpan<byte> GetReplyBody(in FrameReply reply, byte[] replyInto, out byte[]? inline, out long size)
    {
        inline = null;
        size = 0;
        if (PocketClient.IsInReplyBuffer(reply) || reply.Body.Length == reply.DataLength)
        {
            return PocketClient.ReplyBody(reply, replyInto);
        }

        var head = replyInto.AsSpan(0, InlineGetReplyPrefix);
        if (GetReply.TryRead(head, out var got) && got.IsInline)
        {
            inline = reply.Body;
            size = got.Size;
            return default;
        }

        var whole = new byte[reply.DataLength];
        head.CopyTo(whole);
        reply.Body.CopyTo(whole.AsSpan(InlineGetReplyPrefix));
        return whole;
    }

    /// <summary>
    /// Encodes a Get into <paramref name="request"/> and sends it; the caller awaits the reply, checks it
    /// (<see cref="PocketClient.Checked"/>: a no-op on a reply that already was) and hands a
    /// <see cref="ConnectionLostException"/> to <see cref="ResendGetAsync"/> when <paramref name="sent"/> has a
    /// connection. On a connected client the returned task is the connection's request itself, so the caller awaits
    /// the reply with no async level of the client's between (each level is a pooled box, an execution-context
    /// capture and a continuation to run per get; the fan-in profile showed them per level).
    /// </summary>
    private ValueTask<FrameReply> StartGetAsync(string key, long offset, long length, GetFlags flags, BodyWriter request, byte[] replyInto, int replyHead, CancellationToken cancellationToken, out SentGet sent)
    {
        var frameFlags = (flags & GetFlags.DeleteAfterRead) != 0 ? FrameFlags.DeleteAfterRead : FrameFlags.None;
        var asked = frameFlags | _client.NodeAddressesFlag;

        // A delete-after-read reply carries a handle to release (like Create's): awaited whatever the token.
        cancellationToken.ThrowIfCancellationRequested();
        var token = frameFlags == FrameFlags.DeleteAfterRead ? CancellationToken.None : cancellationToken;
        GetRequest.Write(request, key, offset, length);
        var connection = _client.ConnectedMetadata;
        sent = new SentGet(connection, asked, token, replyHead);
        return connection is null
            ? _client.SendMetadataAsync(Opcode.Get, asked, Token, request.WrittenMemory, token, replyInto: replyInto, jobId: Id, replyHead: replyHead)
            : connection.SendAsync(Opcode.Get, asked, Token, request.WrittenMemory, replyInto: replyInto, replyHead: replyHead, cancellationToken: token);
    }

    /// <summary>A Get sent on the metadata connection lost it: sent again when it never left, else the client's error.</summary>
    private ValueTask<FrameReply> ResendGetAsync(ConnectionLostException lost, in SentGet sent, BodyWriter request, byte[] replyInto) =>
        _client.ResendMetadataAsync(lost, Opcode.Get, sent.Flags, Token, request.WrittenMemory, sent.Token, replyInto, Id, replyHead: sent.ReplyHead);

    /// <summary>How <see cref="StartGetAsync"/> sent a Get: the connection (null: through <see cref="PocketClient.SendMetadataAsync"/>), flags, token and reply head.</summary>
    private readonly record struct SentGet(FrameConnection? Connection, FrameFlags Flags, CancellationToken Token, int ReplyHead);

    private static GetReply ReadGetReply(ReadOnlySpan<byte> body) =>
        GetReply.TryRead(body, out var reply) ? reply : throw new PocketException(Status.BadRequest, "malformed get reply from the metadata server");

    /// <summary>The extents of a Get reply for an object held by storage nodes.</summary>
    private Layout ToLayout(GetReply reply)
    {
        _client.LearnNodes(reply.Nodes);
        return new(reply.Size, null, ToPlaced(reply.Grants, 0), reply.Release);
    }

    /// <summary>The parts of extents covering [start, end) of the object: grant, offset inside the extent, length.</summary>
    private static IEnumerable<(ExtentGrant Grant, int Within, int Length, long ObjectOffset)> Pieces(Layout layout, long start, long end)
    {
        foreach (var extent in layout.Extents)
        {
            var extentEnd = extent.ObjectOffset + extent.Grant.Length;
            if (extentEnd <= start || extent.ObjectOffset >= end)
            {
                continue;
            }

            var from = Math.Max(start, extent.ObjectOffset);
            var to = Math.Min(end, extentEnd);
            yield return (extent.Grant, (int)(from - extent.ObjectOffset), (int)(to - from), from);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadRangeAsync(string key, Layout layout, long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        try
        {
            if (destination.Length == 0)
            {
                return;
            }

            if (SinglePiece(layout, offset, offset + destination.Length) is { } single)
            {
                // The common case of an object within one extent: no list, no lambda, no parallel loop.
                await ReadExtentAsync(key, single.Grant, single.Within, destination, cancellationToken).ConfigureAwait(false);
                return;
            }

            await ReadPiecesAsync(key, layout, offset, destination, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await ReleaseAsync(layout).ConfigureAwait(false);
        }
    }

    /// <summary>The only piece covering [start, end) when one extent holds the whole range, else null.</summary>
    private static (ExtentGrant Grant, int Within)? SinglePiece(Layout layout, long start, long end)
    {
        foreach (var extent in layout.Extents)
        {
            if (extent.ObjectOffset <= start && extent.ObjectOffset + extent.Grant.Length >= end)
            {
                return (extent.Grant, (int)(start - extent.ObjectOffset));
            }
        }

        return null;
    }

    private async ValueTask ReadPiecesAsync(string key, Layout layout, long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var pieces = Pieces(layout, offset, offset + destination.Length).ToList();
        await ParallelForAsync(pieces.Count, async (i, ct) =>
        {
            var (grant, within, length, objectOffset) = pieces[i];
            await ReadExtentAsync(key, grant, within, destination.Slice((int)(objectOffset - offset), length), ct).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// How long a write the node refuses as stale is tried again. The blocks of a fresh grant may still be busy with
    /// the write of an allocation whose writer died: the metadata server freed them when the writer's connection
    /// closed, and the node lets them go only when it sees the writer's connection to it close, which on a loaded
    /// machine can come after this write. A grant that is stale for good is refused again and the put fails after this.
    /// </summary>
    internal static readonly TimeSpan StaleWriteRetry = TimeSpan.FromSeconds(2);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteExtentAsync(string key, ExtentGrant grant, int within, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var head = BodyWriter.Rent();
        FrameReply reply;
        try
        {
            WriteExtentRequest.Write(head, grant, within);
            reply = await SendNodeAsync(key, grant.NodeId, Opcode.WriteExtent, head.WrittenMemory, data, default, cancellationToken).ConfigureAwait(false);
            var waited = TimeSpan.Zero;
            var pause = TimeSpan.FromMilliseconds(1);
            while (reply.Status == Status.StaleGrant && waited < StaleWriteRetry)
            {
                // The same grant and the same bytes again: a write is idempotent.
                await Task.Delay(pause, cancellationToken).ConfigureAwait(false);
                waited += pause;
                pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.TicksPerMillisecond * 100));
                reply = await SendNodeAsync(key, grant.NodeId, Opcode.WriteExtent, head.WrittenMemory, data, default, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            BodyWriter.Return(head);
        }

        if (!reply.IsOk)
        {
            throw PocketException.From(reply.Status, $"writing '{key}' to node {grant.NodeId}: {reply.Message}");
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadExtentAsync(string key, ExtentGrant grant, int within, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var budget = _client.ReadBudgetOf(grant.NodeId);
        await budget.TakeAsync(destination.Length, cancellationToken).ConfigureAwait(false);
        var head = BodyWriter.Rent();
        FrameReply reply;
        try
        {
            ReadExtentRequest.Write(head, grant, within, destination.Length);
            reply = await SendNodeAsync(key, grant.NodeId, Opcode.ReadExtent, head.WrittenMemory, default, destination, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            BodyWriter.Return(head);
            budget.Give(destination.Length);
        }

        if (!reply.IsOk)
        {
            var status = reply.Status == Status.StaleGrant ? Status.NotFound : reply.Status;
            throw PocketException.From(status, $"reading '{key}' from node {grant.NodeId}: {reply.Message}");
        }

        if (reply.DataLength != destination.Length)
        {
            throw new PocketException(Status.InternalError, $"reading '{key}' from node {grant.NodeId}: expected {destination.Length} bytes, got {reply.DataLength}");
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FrameReply> SendNodeAsync(string key, uint nodeId, Opcode opcode, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data, Memory<byte> replyInto, CancellationToken cancellationToken)
    {
        var connection = await _client.NodeAsync(nodeId, key, Token, cancellationToken).ConfigureAwait(false);
        try
        {
            try
            {
                return await connection.SendAsync(opcode, FrameFlags.None, Token, head, data, replyInto, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (ConnectionLostException ex) when (ex.NotSent)
            {
                // The connection broke before the request went out (the node closes idle connections): a new one.
                connection = await _client.NodeAsync(nodeId, key, Token, cancellationToken).ConfigureAwait(false);
                return await connection.SendAsync(opcode, FrameFlags.None, Token, head, data, replyInto, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ConnectionLostException ex)
        {
            throw new NodeLostException($"object '{key}' lost: storage node {nodeId} ({connection.Remote}) failed: {ex.Message}", ex);
        }
    }

    private Task ParallelForAsync(int count, Func<int, CancellationToken, ValueTask> body, CancellationToken cancellationToken)
    {
        if (count == 1)
        {
            return body(0, cancellationToken).AsTask();
        }

        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _client.Options.MaxParallelTransfers), CancellationToken = cancellationToken };
        return Parallel.ForAsync(0, count, options, body);
    }
}

/// <summary>Reports bytes read through a stream.</summary>
internal sealed class ProgressStream(Stream inner, IProgress<long> progress) : Stream
{
    private long _total;

    public override bool CanRead => true;
    public override bool CanSeek => inner.CanSeek;
    public override bool CanWrite => false;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Count(await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false));
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    private int Count(int n)
    {
        _total += n;
        progress.Report(_total);
        return n;
    }
}
