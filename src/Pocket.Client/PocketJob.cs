using System.Buffers;
using System.Runtime.CompilerServices;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Client;

/// <summary>
/// A job's view of Pocket: every data operation runs under the job's token, with keys relative to the job.
/// Thread-safe; cheap to keep.
/// </summary>
public sealed partial class PocketJob
{
    private readonly PocketClient _client;

    internal PocketJob(PocketClient client, string id, JobToken token)
    {
        _client = client;
        Id = id;
        Token = token;
    }

    /// <summary>The job id, e.g. "sort-3".</summary>
    public string Id { get; }

    /// <summary>The job's secret token; whoever holds it can read and write the job's data.</summary>
    public JobToken Token { get; }

    /// <summary>The client this job belongs to.</summary>
    public PocketClient Client => _client;

    /// <summary>Every storage node the metadata server knows, asked with this job's token (no cluster token needed).</summary>
    public Task<IReadOnlyList<NodeInfo>> GetNodesAsync(CancellationToken cancellationToken = default) =>
        _client.ListNodesAsync(Token, cancellationToken);

    private int SmallThreshold => Math.Min(_client.Options.SmallObjectThreshold, ProtocolLimits.Default.MaxSmallObject);

    /// <summary>Stores <paramref name="data"/> under <paramref name="key"/>. Objects are write-once: an existing key fails with <see cref="ObjectExistsException"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, PutFlags flags = PutFlags.None, CancellationToken cancellationToken = default)
    {
        if (data.Length <= SmallThreshold)
        {
            var body = BodyWriter.Rent();
            try
            {
                PutSmallRequest.WriteHead(body, key, data.Length);
                var frameFlags = ToFrameFlags(flags);

                // On a connected client the connection's request is awaited here, with no async level of the client's
                // between it and the reply (as a small get's, see StartGetAsync): each level was a pooled box, a
                // context capture and a continuation more on a function's first put.
                if (_client.ConnectedMetadata is { } connection)
                {
                    try
                    {
                        PocketClient.Checked(await connection.SendAsync(Opcode.PutSmall, frameFlags, Token, body.WrittenMemory, data, cancellationToken: cancellationToken).ConfigureAwait(false));
                    }
                    catch (ConnectionLostException lost)
                    {
                        await _client.ResendMetadataAsync(lost, Opcode.PutSmall, frameFlags, Token, body.WrittenMemory, cancellationToken, jobId: Id, data: data).ConfigureAwait(false);
                    }
                }
                else
                {
                    await _client.SendMetadataAsync(Opcode.PutSmall, frameFlags, Token, body.WrittenMemory, cancellationToken, data, jobId: Id).ConfigureAwait(false);
                }

                return;
            }
            catch (CapacityExceededException)
            {
                // The inline store is full: fall through to storage nodes.
            }
            finally
            {
                BodyWriter.Return(body);
            }
        }

        // A method of its own: its lambda's closure would otherwise be allocated on every call, small ones too.
        await PutLargeAsync(key, data, flags, cancellationToken).ConfigureAwait(false);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask PutLargeAsync(string key, ReadOnlyMemory<byte> data, PutFlags flags, CancellationToken cancellationToken)
    {
        var (handle, extents) = await CreateAsync(key, data.Length, flags, cancellationToken).ConfigureAwait(false);
        try
        {
            if (extents.Count == 1)
            {
                await WriteExtentAsync(key, extents[0].Grant, 0, data[..extents[0].Grant.Length], cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await WriteExtentsAsync(key, extents, data, cancellationToken).ConfigureAwait(false);
            }

            await CommitAsync(handle, data.Length, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await AbortQuietlyAsync(handle).ConfigureAwait(false);
            throw;
        }
    }

    private Task WriteExtentsAsync(string key, List<PlacedExtent> extents, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        ParallelForAsync(extents.Count, async (i, ct) =>
        {
            var e = extents[i];
            await WriteExtentAsync(key, e.Grant, 0, data.Slice((int)e.ObjectOffset, e.Grant.Length), ct).ConfigureAwait(false);
        }, cancellationToken);

    /// <summary>Stores everything read from <paramref name="source"/>. Memory use is bounded whatever the stream's length.</summary>
    public async Task PutAsync(string key, Stream source, PutFlags flags = PutFlags.None, CancellationToken cancellationToken = default)
    {
        long? knownLength = source.CanSeek ? source.Length - source.Position : null;
        if (knownLength is { } small && small <= SmallThreshold)
        {
            var buffer = new byte[small];
            await source.ReadExactlyAsync(buffer, cancellationToken).ConfigureAwait(false);
            await PutAsync(key, buffer, flags, cancellationToken).ConfigureAwait(false);
            return;
        }

        var (handle, extents) = await CreateAsync(key, knownLength ?? -1, flags, cancellationToken).ConfigureAwait(false);
        long total = 0;
        var inFlight = new List<Task>();
        using var window = new SemaphoreSlim(_client.Options.MaxParallelTransfers);
        try
        {
            var allocated = extents.Count == 0 ? 0 : extents[^1].ObjectOffset + extents[^1].Grant.Length;
            var batch = _client.Options.StreamAllocationBatch;
            var index = 0;
            var done = false;
            var lookahead = new byte[1];
            var haveLookahead = false;
            while (!done)
            {
                if (index == extents.Count)
                {
                    // Every granted byte is filled: ask for more space only if the stream has more bytes, so a
                    // stream that ends exactly here still fits a cluster with no room to spare.
                    if (await ReadUpToAsync(source, lookahead, cancellationToken).ConfigureAwait(false) == 0)
                    {
                        break;
                    }

                    haveLookahead = true;
                    List<PlacedExtent> more;
                    while (true)
                    {
                        try
                        {
                            more = await AllocateAsync(handle, batch, allocated, cancellationToken).ConfigureAwait(false);
                            break;
                        }
                        catch (CapacityExceededException ex) when (ex.Status == Status.CapacityExceeded && batch > MinStreamAllocation)
                        {
                            // The stream's length is unknown, so a full batch may be more than it needs: ask for
                            // less before telling the caller the cluster is full.
                            batch = Math.Max(MinStreamAllocation, batch / 2);
                        }
                        catch (QuotaExceededException) when (batch > MinStreamAllocation)
                        {
                            // Likewise for the job's byte quota: the last bytes of a stream may fit under it in a smaller batch.
                            batch = Math.Max(MinStreamAllocation, batch / 2);
                        }
                    }

                    extents.AddRange(more);
                    allocated += batch;
                }

                var extent = extents[index++];
                await window.WaitAsync(cancellationToken).ConfigureAwait(false);
                var buffer = ArrayPool<byte>.Shared.Rent(extent.Grant.Length);
                int filled;
                try
                {
                    var start = 0;
                    if (haveLookahead)
                    {
                        buffer[0] = lookahead[0];
                        start = 1;
                        haveLookahead = false;
                    }

                    filled = start + await ReadUpToAsync(source, buffer.AsMemory(start, extent.Grant.Length - start), cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    window.Release();
                    throw;
                }

                total += filled;
                done = filled < extent.Grant.Length;
                if (filled == 0)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    window.Release();
                    break;
                }

                inFlight.Add(WriteAndReleaseAsync(key, extent.Grant, buffer, filled, window, cancellationToken));
                inFlight.RemoveAll(t => t.IsCompletedSuccessfully);
                if (inFlight.Find(t => t.IsFaulted || t.IsCanceled) is { } failed)
                {
                    await failed.ConfigureAwait(false);
                }

                if (knownLength is { } length && total == length)
                {
                    done = true;
                }
            }

            await Task.WhenAll(inFlight).ConfigureAwait(false);
            await CommitAsync(handle, total, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Let the writes still in flight finish (they hold pooled buffers and the window) before the
            // extents they write to are given back.
            try
            {
                await Task.WhenAll(inFlight).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The failure that got us here is the one rethrown below.
            }

            await AbortQuietlyAsync(handle).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The smallest allocation asked for while a stream of unknown length is stored (one default block).</summary>
    private const long MinStreamAllocation = 64 << 10;

    private async Task WriteAndReleaseAsync(string key, ExtentGrant grant, byte[] buffer, int length, SemaphoreSlim window, CancellationToken cancellationToken)
    {
        try
        {
            await WriteExtentAsync(key, grant, 0, buffer.AsMemory(0, length), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            window.Release();
        }
    }

    private static async ValueTask<int> ReadUpToAsync(Stream source, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < buffer.Length)
        {
            var n = await source.ReadAsync(buffer[filled..], cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            filled += n;
        }

        return filled;
    }

    /// <summary>Stores the file at <paramref name="path"/>.</summary>
    public async Task PutFileAsync(string key, string path, PutFlags flags = PutFlags.None, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan);
        await using (stream.ConfigureAwait(false))
        {
            await PutAsync(key, progress is null ? stream : new ProgressStream(stream, progress), flags, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Reads a whole object into a new array.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<byte[]> GetAsync(string key, GetFlags flags = GetFlags.None, CancellationToken cancellationToken = default)
    {
        Layout layout;
        var scratch = ArrayPool<byte>.Shared.Rent(GetReplyScratch);
        var request = BodyWriter.Rent();
        try
        {
            // SendGetAsync's work without its async level (see StartGetAsync), as the get into a caller's buffer.
            FrameReply reply;
            var send = StartGetAsync(key, 0, -1, flags, request, scratch, InlineGetReplyPrefix, cancellationToken, out var sent);
            try
            {
                reply = PocketClient.Checked(await send.ConfigureAwait(false));
            }
            catch (ConnectionLostException lost) when (sent.Connection is not null)
            {
                reply = await ResendGetAsync(lost, sent, request, scratch).ConfigureAwait(false);
            }

            // An inline object longer than the scratch buffer arrives as an array of its own bytes: the result itself.
            var body = GetReplyBody(reply, scratch, out var whole, out _);
            if (whole is not null)
            {
                return whole;
            }

            var got = ReadGetReply(body);
            if (got.IsInline)
            {
                var inline = got.Inline;
                return inline.ToArray();
            }

            layout = ToLayout(got);
        }
        finally
        {
            BodyWriter.Return(request);
            ArrayPool<byte>.Shared.Return(scratch);
        }

        if (layout.Size > Array.MaxLength)
        {
            await ReleaseAsync(layout).ConfigureAwait(false);
            throw new PocketException(Status.BadRequest, $"object '{key}' has {layout.Size} bytes, too many for one array; read it into a stream");
        }

        var result = GC.AllocateUninitializedArray<byte>((int)layout.Size);
        await ReadRangeAsync(key, layout, 0, result, cancellationToken).ConfigureAwait(false);
        return result;
    }

    /// <summary>
    /// Reads <paramref name="destination"/>.Length bytes (or up to the end) from <paramref name="offset"/>. Returns the bytes read.
    /// For a small object this allocates nothing at steady state: the reply is read into a pooled buffer and copied out.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> GetAsync(string key, long offset, Memory<byte> destination, GetFlags flags = GetFlags.None, CancellationToken cancellationToken = default)
    {
        Layout layout;

        // Room for an inline reply of the destination's size (kind and size, then the bytes), up to the largest inline
        // object: a 1 KiB get needs no 16 KiB buffer, and a 64 KiB one is not read into a new array per get. A larger
        // reply (the object is longer than the destination) is read into an array of its own.
        var scratch = _client.RentReplyBuffer((int)Math.Min(InlineGetReplyLimit, (long)destination.Length + InlineGetReplyPrefix));
        var request = BodyWriter.Rent();
        try
        {
            // SendGetAsync's work without its async level (see StartGetAsync): the caller awaits the request itself.
            FrameReply reply;
            var send = StartGetAsync(key, offset, -1, flags, request, scratch, 0, cancellationToken, out var sent);
            try
            {
                reply = PocketClient.Checked(await send.ConfigureAwait(false));
            }
            catch (ConnectionLostException lost) when (sent.Connection is not null)
            {
                reply = await ResendGetAsync(lost, sent, request, scratch).ConfigureAwait(false);
            }

            var body = PocketClient.ReplyBody(reply, scratch);
            var got = ReadGetReply(body);
            if (got.IsInline)
            {
                var inline = got.Inline;
                var copied = Math.Min(destination.Length, inline.Length);
                inline[..copied].CopyTo(destination.Span);
                return copied;
            }

            layout = ToLayout(got);
        }
        finally
        {
            BodyWriter.Return(request);
            _client.ReturnReplyBuffer(scratch);
        }

        var count = (int)Math.Min(destination.Length, layout.Size - offset);
        await ReadRangeAsync(key, layout, offset, destination[..count], cancellationToken).ConfigureAwait(false);
        return count;
    }

    /// <summary>Writes the object (or the range from <paramref name="offset"/>, <paramref name="length"/> bytes, -1 for all) to a stream, with bounded memory.</summary>
    public async Task GetAsync(string key, Stream destination, long offset = 0, long length = -1, GetFlags flags = GetFlags.None, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        var layout = await GetLayoutAsync(key, offset, length, flags, cancellationToken).ConfigureAwait(false);
        await CopyAsync(key, layout, destination, offset, length, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Moves the granted range of an object into a stream, then releases the layout.</summary>
    private async Task CopyAsync(string key, Layout layout, Stream destination, long offset, long length, IProgress<long>? progress, CancellationToken cancellationToken)
    {
        if (layout.Inline is { } inline)
        {
            await destination.WriteAsync(inline, cancellationToken).ConfigureAwait(false);
            progress?.Report(inline.Length);
            return;
        }

        var end = length < 0 ? layout.Size : offset + length;
        var pieces = Pieces(layout, offset, end).ToList();
        var window = Math.Max(1, _client.Options.MaxParallelTransfers);
        var queue = new Queue<(Task Read, byte[] Buffer, int Length)>();
        try
        {
            var next = 0;
            long written = 0;
            while (next < pieces.Count || queue.Count > 0)
            {
                while (next < pieces.Count && queue.Count < window)
                {
                    var piece = pieces[next++];
                    var buffer = ArrayPool<byte>.Shared.Rent(piece.Length);
                    queue.Enqueue((ReadExtentAsync(key, piece.Grant, piece.Within, buffer.AsMemory(0, piece.Length), cancellationToken).AsTask(), buffer, piece.Length));
                }

                var (read, data, count) = queue.Dequeue();
                try
                {
                    await read.ConfigureAwait(false);
                    await destination.WriteAsync(data.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(data);
                }

                written += count;
                progress?.Report(written);
            }
        }
        finally
        {
            while (queue.Count > 0)
            {
                var (read, data, _) = queue.Dequeue();
                try
                {
                    await read.ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is PocketException or ConnectionLostException or OperationCanceledException or ObjectDisposedException)
                {
                }

                ArrayPool<byte>.Shared.Return(data);
            }

            await ReleaseAsync(layout).ConfigureAwait(false);
        }
    }

    /// <summary>Writes the object to a file at <paramref name="path"/> (replaced if present).</summary>
    public async Task GetFileAsync(string key, string path, GetFlags flags = GetFlags.None, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        // Ask for the object before touching the file: a get refused outright (no such key, a lost node) must not
        // truncate a file that was there. A failure in the middle of the transfer can still leave part of it.
        var layout = await GetLayoutAsync(key, 0, -1, flags, cancellationToken).ConfigureAwait(false);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, FileOptions.Asynchronous);
        }
        catch
        {
            await ReleaseAsync(layout).ConfigureAwait(false);
            throw;
        }

        await using (stream.ConfigureAwait(false))
        {
            await CopyAsync(key, layout, stream, 0, -1, progress, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Size and placement of an object, or null when it does not exist.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<ObjectInfo?> LookupAsync(string key, CancellationToken cancellationToken = default)
    {
        var request = BodyWriter.Rent();
        var scratch = _client.RentReplyBuffer(SmallReplyScratch);
        try
        {
            FrameReply reply;
            try
            {
                LookupRequest.Write(request, key);
                reply = await _client.SendMetadataAsync(Opcode.Lookup, FrameFlags.None, Token, request.WrittenMemory, cancellationToken, replyInto: scratch, jobId: Id).ConfigureAwait(false);
            }
            catch (ObjectNotFoundException)
            {
                return null;
            }

            return ParseObjectInfo(key, PocketClient.ReplyBody(reply, scratch));
        }
        finally
        {
            _client.ReturnReplyBuffer(scratch);
            BodyWriter.Return(request);
        }
    }

    private static ObjectInfo ParseObjectInfo(string key, ReadOnlySpan<byte> body)
    {
        if (!LookupReply.TryRead(body, out var reply))
        {
            throw new PocketException(Status.BadRequest, "malformed lookup reply from the metadata server");
        }

        if (reply.Count == 0)
        {
            return new ObjectInfo(key, reply.Size, reply.Inline, []);
        }

        var blocks = new BlockInfo[reply.Count];
        for (var i = 0; i < blocks.Length; i++)
        {
            var extent = reply[i];
            blocks[i] = new BlockInfo(extent.NodeId, extent.NodeState, extent.Offset, extent.Length);
        }

        return new ObjectInfo(key, reply.Size, reply.Inline, blocks);
    }

    /// <summary>True when the object exists.</summary>
    public async ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken = default) =>
        await LookupAsync(key, cancellationToken).ConfigureAwait(false) is not null;

    /// <summary>Deletes one object, or with <paramref name="recursive"/> every object under the prefix. Returns the number deleted.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<long> DeleteAsync(string key, bool recursive = false, CancellationToken cancellationToken = default)
    {
        var request = BodyWriter.Rent();
        var scratch = _client.RentReplyBuffer(SmallReplyScratch);
        try
        {
            DeleteRequest.Write(request, key);
            var reply = await _client.SendMetadataAsync(Opcode.Delete, recursive ? FrameFlags.Recursive : FrameFlags.None, Token, request.WrittenMemory, cancellationToken, replyInto: scratch, jobId: Id).ConfigureAwait(false);
            return DeleteReply.TryRead(PocketClient.ReplyBody(reply, scratch), out var deleted) ? deleted : throw Malformed("delete");
        }
        finally
        {
            _client.ReturnReplyBuffer(scratch);
            BodyWriter.Return(request);
        }
    }

    /// <summary>Number of objects whose key starts with <paramref name="prefix"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<long> CountAsync(string prefix = "", CancellationToken cancellationToken = default)
    {
        var request = BodyWriter.Rent();
        var scratch = _client.RentReplyBuffer(SmallReplyScratch);
        try
        {
            CountRequest.Write(request, prefix);
            var reply = await _client.SendMetadataAsync(Opcode.Count, FrameFlags.None, Token, request.WrittenMemory, cancellationToken, replyInto: scratch, jobId: Id).ConfigureAwait(false);
            return CountReply.TryRead(PocketClient.ReplyBody(reply, scratch), out var count) ? count : throw Malformed("count");
        }
        finally
        {
            _client.ReturnReplyBuffer(scratch);
            BodyWriter.Return(request);
        }
    }

    /// <summary>
    /// Lists objects under <paramref name="prefix"/> in key order, fetched in pages. With <paramref name="delimited"/>,
    /// keys with a further '/' are folded into one "directory" entry.
    /// </summary>
    public IAsyncEnumerable<ListEntry> ListAsync(string prefix = "", bool delimited = false, int pageSize = 1000, CancellationToken cancellationToken = default) =>
        ListAsync(prefix, startAfter: null, delimited, pageSize, cancellationToken);

    /// <summary>
    /// Lists objects under <paramref name="prefix"/> in key order, beginning after <paramref name="startAfter"/>
    /// (null or "" for the first key), fetched in pages of <paramref name="pageSize"/>. With <paramref name="delimited"/>,
    /// keys with a further '/' are folded into one "directory" entry ending in '/', and a directory at or before
    /// <paramref name="startAfter"/> is not listed. The server seeks to <paramref name="startAfter"/>, so resuming a
    /// listing costs one page, not the entries before it.
    /// </summary>
    public async IAsyncEnumerable<ListEntry> ListAsync(string prefix, string? startAfter, bool delimited = false, int pageSize = 1000, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var next = startAfter ?? string.Empty;
        while (true)
        {
            using var page = await ListPageAsync(prefix, next, pageSize, delimited, cancellationToken).ConfigureAwait(false);
            foreach (var entry in ToListEntries(page))
            {
                yield return entry;
            }

            if (!page.HasMore)
            {
                yield break;
            }

            next = page.NextStartAfter;
        }
    }

    /// <summary>The entries of a page as <see cref="ListEntry"/> objects (a ref-struct enumerator cannot cross a yield).</summary>
    private static ListEntry[] ToListEntries(ListPage page)
    {
        var entries = new ListEntry[page.Count];
        var i = 0;
        foreach (var entry in page)
        {
            entries[i++] = entry.ToListEntry();
        }

        return entries;
    }

    /// <summary>
    /// One page of up to <paramref name="limit"/> entries under <paramref name="prefix"/> after
    /// <paramref name="startAfter"/> (null or "" for the first key), with the same rules as <see cref="ListAsync(string, string?, bool, int, CancellationToken)"/>.
    /// The page reads its entries from the reply buffer as they are enumerated (keys as UTF-8), so walking it makes
    /// no strings or entry objects; dispose it to give the buffer back, and continue from
    /// <see cref="ListPage.NextStartAfter"/> while <see cref="ListPage.HasMore"/>.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<ListPage> ListPageAsync(string prefix, string? startAfter = null, int limit = 1000, bool delimited = false, CancellationToken cancellationToken = default)
    {
        // Most pages fit the rented buffer; a bigger one arrives in an array of its own.
        var scratch = ArrayPool<byte>.Shared.Rent((int)Math.Min(ListReplyScratchMax, 64 + ((long)Math.Max(limit, 0) * 64)));
        var body = BodyWriter.Rent();
        FrameReply reply;
        try
        {
            ListRequest.Write(body, prefix, startAfter ?? string.Empty, limit, delimited);
            reply = await _client.SendMetadataAsync(Opcode.List, FrameFlags.None, Token, body.WrittenMemory, cancellationToken, replyInto: scratch, jobId: Id).ConfigureAwait(false);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(scratch);
            throw;
        }
        finally
        {
            BodyWriter.Return(body);
        }

        if (PocketClient.IsInReplyBuffer(reply))
        {
            return new ListPage(scratch, reply.DataLength, rented: true);
        }

        ArrayPool<byte>.Shared.Return(scratch);
        return new ListPage(reply.Body, reply.Body.Length, rented: false);
    }

    /// <summary>The largest reply buffer a listing rents; a bigger page arrives in an array of its own.</summary>
    private const int ListReplyScratchMax = 1 << 20;

    /// <summary>Objects, bytes and requests of this job.</summary>
    public async ValueTask<JobUsage> GetUsageAsync(CancellationToken cancellationToken = default)
    {
        var request = new BodyWriter(sizeof(ushort));
        JobStatsRequest.Write(request, string.Empty);
        var reply = await _client.SendMetadataAsync(Opcode.JobStats, FrameFlags.None, Token, request.WrittenMemory, cancellationToken, jobId: Id).ConfigureAwait(false);
        return JobUsage.Read(reply.Body);
    }

    private static PocketException Malformed(string what) => new(Status.BadRequest, $"malformed {what} reply from the metadata server");

    /// <summary>
    /// The reply buffer of a get whose size is not known ahead (a whole object into a new array, a layout): room for an
    /// inline object of up to 16 KiB; a larger inline reply is read into an array of its own. Rented from the shared
    /// pool, so kept small: thousands of gets in flight empty the pool's bucket and then allocate its size each.
    /// </summary>
    private const int GetReplyScratch = (16 << 10) + 64;

    /// <summary>The largest inline get reply (kind, size and bytes of the largest inline object).</summary>
    private static readonly int InlineGetReplyLimit = ProtocolLimits.Default.MaxSmallObject + InlineGetReplyPrefix;

    /// <summary>A reply buffer for the small fixed replies of lookup and delete.</summary>
    private const int SmallReplyScratch = 256;

    /// <summary>What an inline Get reply holds before the object's bytes: kind (u8) and size (i64).</summary>
    private const int InlineGetReplyPrefix = 1 + sizeof(long);

    private static FrameFlags ToFrameFlags(PutFlags flags) => (flags & PutFlags.KeepAfterJob) != 0 ? FrameFlags.KeepAfterJob : FrameFlags.None;
}
