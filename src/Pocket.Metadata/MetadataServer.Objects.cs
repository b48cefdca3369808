using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    /// <summary>PutSmall: key, blob. The whole object in one round trip, kept inline here.</summary>
    private void HandlePutSmall(FrameContext frame, JobEntry job)
    {
        if (!PutSmallRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "put-small");
            return;
        }

        var key = request.Key;
        var data = request.Data;
        if (!CheckKey(frame, key))
        {
            return;
        }

        if (data.Length > _options.Listener.Limits.MaxSmallObject)
        {
            frame.ReplyError(Status.FrameTooLarge, $"inline objects are at most {_options.Listener.Limits.MaxSmallObject} bytes; use create/commit");
            return;
        }

        // Kept on the pinned object heap: a stored object lives until it is deleted, and young-generation
        // collections would otherwise copy every recent put (the pauses land in the tail latency of puts).
        var copy = GC.AllocateUninitializedArray<byte>(data.Length, pinned: true);
        data.CopyTo(copy);
        lock (_lock)
        {
            if (job.Objects.ContainsKey(key) || job.Reserved.Contains(key))
            {
                frame.ReplyError(Status.Exists, $"object '{key}' exists");
                return;
            }

            if (_inlineBytes + copy.Length > _options.InlineCapacity)
            {
                frame.ReplyError(Status.CapacityExceeded, "capacity exceeded: the metadata server's inline store is full; write through storage nodes");
                return;
            }

            _inlineBytes += copy.Length;
            job.InlineBytes += copy.Length;
            AddObject(job, new ObjectEntry { Key = key, Size = copy.Length, Inline = copy, Flags = frame.Header.Flags });
        }

        frame.Reply(Status.Ok);
    }

    private static void AddObject(JobEntry job, ObjectEntry entry)
    {
        job.Objects[entry.Key] = entry;
        job.Keys.Set(entry);
        foreach (var extent in entry.Extents)
        {
            job.TierBytes[(int)extent.Tier] += extent.Length;
        }
    }

    private static void RemoveObject(JobEntry job, string key)
    {
        if (job.Objects.Remove(key, out var entry))
        {
            foreach (var extent in entry.Extents)
            {
                job.TierBytes[(int)extent.Tier] -= extent.Length;
            }
        }

        job.Keys.Remove(key);
    }

    /// <summary>Get (<see cref="GetRequest"/>, reply <see cref="GetReply"/>): a small object's bytes, or read grants for a large one's extents.</summary>
    private void HandleGet(FrameContext frame, JobEntry job)
    {
        if (!GetRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "get");
            return;
        }

        var offset = request.Offset;
        var length = request.Length;

        // The key is looked up as characters on the stack: a get makes no string unless it fails.
        if (!CheckKey(frame, request.KeyUtf8, stackalloc char[MaxStackKeyChars], out var key))
        {
            return;
        }

        var deleteAfterRead = (frame.Header.Flags & FrameFlags.DeleteAfterRead) != 0;
        var body = BodyWriter.Rent();
        try
        {
            lock (_lock)
            {
                if (!job.Objects.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(key, out var entry))
                {
                    frame.ReplyError(Status.NotFound, $"object '{key}' not found");
                    return;
                }

                if (offset < 0 || offset > entry.Size || length < -1 || (length >= 0 && length > entry.Size - offset))
                {
                    frame.ReplyError(Status.BadRequest, $"range {offset}+{length} is outside object '{key}' of {entry.Size} bytes");
                    return;
                }

                if (LostNode(entry) is { } lost)
                {
                    frame.ReplyError(Status.NodeLost, $"object '{key}' lost: storage node {lost} is dead");
                    return;
                }

                if (entry.Inline is { } inline)
                {
                    var count = length < 0 ? entry.Size - offset : length;
                    GetReply.WriteInline(body, entry.Size, inline.AsSpan((int)offset, (int)count));
                    if (deleteAfterRead)
                    {
                        RemoveObject(job, entry.Key);
                        FreeObject(job, entry);
                    }
                }
                else
                {
                    ulong release = 0;
                    if (deleteAfterRead)
                    {
                        // The object leaves the namespace now; its extents stay allocated until the reader is done.
                        RemoveObject(job, entry.Key);
                        job.StoredBytes -= entry.Size;
                        var handle = new OpenHandle { Id = ++_nextHandle, Job = job, Key = entry.Key, ConnectionId = frame.ConnectionId, IsWrite = false };
                        handle.Extents.AddRange(entry.Extents);
                        _handles[handle.Id] = handle;
                        release = handle.Id;
                    }

                    GetReply.WriteExtentsHead(body, entry.Size, release);
                    WriteGrants(body, entry.Extents, GrantRights.Read);
                }
            }

            frame.Reply(Status.Ok, body.WrittenSpan);
        }
        finally
        {
            BodyWriter.Return(body);
        }
    }

    /// <summary>Keys up to this many UTF-16 characters are decoded on the stack (the default key limit is 1024 bytes).</summary>
    private const int MaxStackKeyChars = 1024;

    /// <summary>
    /// Decodes a key the reader has already checked to be valid UTF-8 into <paramref name="stack"/> (an array when it
    /// is longer), so a request by key makes no string unless it fails, and checks it as <see cref="CheckKey(FrameContext, ReadOnlySpan{char})"/>.
    /// </summary>
    private bool CheckKey(FrameContext frame, ReadOnlySpan<byte> utf8, Span<char> stack, out ReadOnlySpan<char> key)
    {
        var destination = utf8.Length <= stack.Length ? stack : new char[utf8.Length];
        key = destination[..System.Text.Encoding.UTF8.GetChars(utf8, destination)];
        return CheckKey(frame, key);
    }

    private bool CheckKey(FrameContext frame, ReadOnlySpan<char> key)
    {
        if (ObjectKey.IsValid(key, _options.Listener.Limits, out var error))
        {
            return true;
        }

        frame.ReplyError(Status.InvalidKey, error);
        return false;
    }

    /// <summary>Create (<see cref="CreateRequest"/>, reply <see cref="CreateReply"/>): a write handle and write grants for the hinted size.</summary>
    private void HandleCreate(FrameContext frame, JobEntry job)
    {
        if (!CreateRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "create");
            return;
        }

        var key = request.Key;
        var sizeHint = request.SizeHint;
        if (!CheckKey(frame, key))
        {
            return;
        }

        var body = new BodyWriter(256);
        lock (_lock)
        {
            if (job.Objects.ContainsKey(key) || job.Reserved.Contains(key))
            {
                frame.ReplyError(Status.Exists, $"object '{key}' exists");
                return;
            }

            var handle = new OpenHandle { Id = ++_nextHandle, Job = job, Key = key, ConnectionId = frame.ConnectionId, Flags = frame.Header.Flags, IsWrite = true };
            if (sizeHint > 0)
            {
                var status = Allocate(job, sizeHint, handle.Extents, out var error);
                if (status != Status.Ok)
                {
                    frame.ReplyError(status, $"cannot store '{key}': {error}");
                    return;
                }

                handle.Allocated = sizeHint;
            }

            job.Reserved.Add(key);
            _handles[handle.Id] = handle;
            CreateReply.WriteHead(body, handle.Id);
            WriteGrants(body, handle.Extents, GrantRights.Read | GrantRights.Write);
        }

        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    /// <summary>Allocate (<see cref="AllocateRequest"/>): write grants for new extents, appended to the object.</summary>
    private void HandleAllocate(FrameContext frame, JobEntry job)
    {
        if (!AllocateRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "allocate");
            return;
        }

        var (id, bytes) = request;

        var body = new BodyWriter(256);
        lock (_lock)
        {
            if (!TryGetWriteHandle(frame, job, id, out var handle))
            {
                return;
            }

            if (bytes <= 0)
            {
                frame.ReplyError(Status.BadRequest, "allocate needs a positive byte count");
                return;
            }

            var added = new List<Extent>();
            var status = Allocate(job, bytes, added, out var error);
            if (status != Status.Ok)
            {
                frame.ReplyError(status, $"cannot store '{handle.Key}': {error}");
                return;
            }

            handle.Extents.AddRange(added);
            handle.Allocated += bytes;
            WriteGrants(body, added, GrantRights.Read | GrantRights.Write);
        }

        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    private bool TryGetWriteHandle(FrameContext frame, JobEntry job, ulong id, out OpenHandle handle)
    {
        if (_handles.TryGetValue(id, out handle!) && handle.Job == job && handle.IsWrite)
        {
            return true;
        }

        frame.ReplyError(Status.NotFound, $"no open write {id}");
        return false;
    }

    /// <summary>Commit (<see cref="CommitRequest"/>): the object becomes visible at once; unused extents are freed.</summary>
    private void HandleCommit(FrameContext frame, JobEntry job)
    {
        if (!CommitRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "commit");
            return;
        }

        var (id, size) = request;

        lock (_lock)
        {
            if (!TryGetWriteHandle(frame, job, id, out var handle))
            {
                return;
            }

            if (size < 0 || size > handle.Allocated)
            {
                frame.ReplyError(Status.BadRequest, $"commit size {size} is outside the {handle.Allocated} bytes allocated");
                return;
            }

            // Keep extents covering [0, size); trim the last, free the rest.
            var kept = new List<Extent>();
            var toFree = new List<Extent>();
            long covered = 0;
            foreach (var extent in handle.Extents)
            {
                if (covered >= size)
                {
                    toFree.Add(extent);
                    continue;
                }

                var use = (int)Math.Min(extent.Length, size - covered);
                var node = _nodes.GetValueOrDefault(extent.NodeId);
                if (use < extent.Length && node is not null)
                {
                    var usedBlocks = (use + node.BlockSize - 1) / node.BlockSize;
                    var allBlocks = (extent.Length + node.BlockSize - 1) / node.BlockSize;
                    if (allBlocks > usedBlocks)
                    {
                        toFree.Add(extent with { Offset = extent.Offset + ((long)usedBlocks * node.BlockSize), Length = (allBlocks - usedBlocks) * node.BlockSize });
                    }
                }

                kept.Add(extent with { Length = use });
                covered += use;
            }

            var entry = new ObjectEntry { Key = handle.Key, Size = size, Extents = [.. kept], Flags = handle.Flags };
            if (LostNode(entry) is { } lost)
            {
                ReleaseHandle(handle);
                frame.ReplyError(Status.NodeLost, $"object '{handle.Key}' lost while being written: storage node {lost} is dead");
                return;
            }

            _handles.Remove(handle.Id);
            job.Reserved.Remove(handle.Key);
            FreeExtents(toFree);
            job.StoredBytes += size;
            AddObject(job, entry);
        }

        frame.Reply(Status.Ok);
    }

    /// <summary>Abort: handle. Drops an unfinished write, or releases a delete-after-read object once read.</summary>
    private void HandleAbort(FrameContext frame, JobEntry job)
    {
        if (!AbortRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "abort");
            return;
        }

        var id = request.Handle;

        lock (_lock)
        {
            if (!_handles.TryGetValue(id, out var handle) || handle.Job != job)
            {
                frame.ReplyError(Status.NotFound, $"no open handle {id}");
                return;
            }

            ReleaseHandle(handle);
        }

        frame.Reply(Status.Ok);
    }

    /// <summary>
    /// Lookup (<see cref="LookupRequest"/>). Reply (<see cref="LookupReply"/>): size i64, inline u8, put flags u16, extent
    /// count u32, then per extent node u32, node state u8, offset i64, length i32.
    /// </summary>
    private void HandleLookup(FrameContext frame, JobEntry job)
    {
        if (!LookupRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "lookup");
            return;
        }

        if (!CheckKey(frame, request.KeyUtf8, stackalloc char[MaxStackKeyChars], out var key))
        {
            return;
        }

        var body = BodyWriter.Rent();
        try
        {
            lock (_lock)
            {
                if (!job.Objects.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(key, out var entry))
                {
                    frame.ReplyError(Status.NotFound, $"object '{key}' not found");
                    return;
                }

                LookupReply.WriteHead(body, entry.Size, entry.Inline is not null, entry.Flags, entry.Extents.Length);
                foreach (var extent in entry.Extents)
                {
                    var state = _nodes.TryGetValue(extent.NodeId, out var node) ? node.State : NodeState.Dead;
                    LookupReply.WriteExtent(body, new LookupExtent(extent.NodeId, state, extent.Offset, extent.Length));
                }
            }

            frame.Reply(Status.Ok, body.WrittenSpan);
        }
        finally
        {
            BodyWriter.Return(body);
        }
    }

    /// <summary>Delete (<see cref="DeleteRequest"/>): one key, or with <see cref="FrameFlags.Recursive"/> a prefix. Reply: objects deleted.</summary>
    private void HandleDelete(FrameContext frame, JobEntry job)
    {
        if (!DeleteRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "delete");
            return;
        }

        var key = request.Key;

        var recursive = (frame.Header.Flags & FrameFlags.Recursive) != 0;
        if (recursive ? !ObjectKey.IsValidPrefix(key, _options.Listener.Limits, out var error) : !ObjectKey.IsValid(key, _options.Listener.Limits, out error))
        {
            frame.ReplyError(Status.InvalidKey, error);
            return;
        }

        long deleted = 0;
        lock (_lock)
        {
            if (!recursive)
            {
                if (!job.Objects.TryGetValue(key, out var entry))
                {
                    frame.ReplyError(Status.NotFound, $"object '{key}' not found");
                    return;
                }

                RemoveObject(job, key);
                FreeObject(job, entry);
                deleted = 1;
            }
            else
            {
                foreach (var k in KeysWithPrefix(job, key))
                {
                    var entry = job.Objects[k];
                    RemoveObject(job, k);
                    FreeObject(job, entry);
                    deleted++;
                }
            }
        }

        Span<byte> reply = stackalloc byte[DeleteReply.Size];
        DeleteReply.Write(reply, deleted);
        frame.Reply(Status.Ok, reply);
    }

    /// <summary>The keys under <paramref name="prefix"/>, copied out so the caller may change the index while it walks them.</summary>
    private static List<string> KeysWithPrefix(JobEntry job, string prefix)
    {
        var keys = new List<string>();
        foreach (var entry in job.Keys.From(prefix, exclusive: false))
        {
            if (!entry.Key.StartsWith(prefix, StringComparison.Ordinal))
            {
                break;
            }

            keys.Add(entry.Key);
        }

        return keys;
    }

    private static long CountKeysWithPrefix(JobEntry job, string prefix)
    {
        if (prefix.Length == 0)
        {
            return job.Keys.Count;
        }

        long count = 0;
        foreach (var entry in job.Keys.From(prefix, exclusive: false))
        {
            if (!entry.Key.StartsWith(prefix, StringComparison.Ordinal))
            {
                break;
            }

            count++;
        }

        return count;
    }

    /// <summary>
    /// List (<see cref="ListRequest"/>, reply <see cref="ListReply"/>): a page of keys under a prefix after start-after.
    /// With delimited set, keys with a '/' past the prefix are folded into one "directory" entry ending in '/'.
    /// </summary>
    private void HandleList(FrameContext frame, JobEntry job)
    {
        if (!ListRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "list");
            return;
        }

        var prefix = request.Prefix;
        var startAfter = request.StartAfter;
        var limit = request.Limit;
        var delimited = request.Delimited;

        if (!ObjectKey.IsValidPrefix(prefix, _options.Listener.Limits, out var error))
        {
            frame.ReplyError(Status.InvalidKey, error);
            return;
        }

        if (limit <= 0 || limit > 10_000)
        {
            frame.ReplyError(Status.BadRequest, "list limit must be between 1 and 10000");
            return;
        }

        // Entries go straight into the reply: the count is patched in at the end, nothing is collected first. The
        // writer is rented with room for a page of keys a little longer than the prefix, so it rarely grows.
        var body = BodyWriter.Rent((int)Math.Min(ListReplyHint, 16 + ((long)limit * (prefix.Length + 24))));
        try
        {
            lock (_lock)
            {
                WriteListPage(body, job, prefix, startAfter, limit, delimited);
            }

            frame.Reply(Status.Ok, body.WrittenSpan);
        }
        finally
        {
            BodyWriter.Return(body);
        }
    }

    /// <summary>The largest list reply a writer is rented for up front (a pooled writer's largest size).</summary>
    private const int ListReplyHint = 64 << 10;

    /// <summary>
    /// Writes the entries of one list page and the start-after of the next ("" when there is none) after the count
    /// as one <see cref="ListReply"/>. Seeks to the start in O(log n) and, with <paramref name="delimited"/>, past
    /// each folded directory, so a page costs O(page) whatever lies before or inside it.
    /// </summary>
    private static void WriteListPage(BodyWriter body, JobEntry job, string prefix, string startAfter, int limit, bool delimited)
    {
        var entries = startAfter.Length > 0 && string.CompareOrdinal(startAfter, prefix) > 0
            ? job.Keys.From(startAfter, exclusive: true)
            : job.Keys.From(prefix, exclusive: false);
        var begin = ListReply.Begin(body);
        var count = 0;
        string? last = null;
        var lastLength = 0;
        var more = false;
        while (entries.MoveNext())
        {
            var entry = entries.Current;
            var key = entry.Key;
            if (!key.StartsWith(prefix, StringComparison.Ordinal))
            {
                break;
            }

            var slash = delimited ? key.IndexOf('/', prefix.Length) : -1;
            if (slash >= 0)
            {
                var directory = key.AsSpan(0, slash + 1);

                // A directory at or before start-after was listed on an earlier page.
                if (startAfter.Length == 0 || directory.CompareTo(startAfter, StringComparison.Ordinal) > 0)
                {
                    if (count == limit)
                    {
                        more = true;
                        break;
                    }

                    ListReply.WriteEntry(body, directory, 0, isPrefix: true);
                    count++;
                    last = key;
                    lastLength = slash + 1;
                }

                // Every key of the directory folds into the entry just written (or skipped): jump past them all.
                // The successor of "dir/" is "dir0" ('0' follows '/').
                entries = job.Keys.From(string.Concat(directory[..^1], "0"), exclusive: false);
                continue;
            }

            if (count == limit)
            {
                more = true;
                break;
            }

            ListReply.WriteEntry(body, key, entry.Size, isPrefix: false);
            count++;
            last = key;
            lastLength = key.Length;
        }

        // The next page starts after the last entry; after a directory entry that skips all of its keys, because
        // a directory not above start-after is never listed again.
        ListReply.End(body, begin, count, more ? last.AsSpan(0, lastLength) : []);
    }

    /// <summary>Count (<see cref="CountRequest"/>): the number of objects under a prefix.</summary>
    private void HandleCount(FrameContext frame, JobEntry job)
    {
        if (!CountRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "count");
            return;
        }

        var prefix = request.Prefix;

        if (!ObjectKey.IsValidPrefix(prefix, _options.Listener.Limits, out var error))
        {
            frame.ReplyError(Status.InvalidKey, error);
            return;
        }

        long count;
        lock (_lock)
        {
            count = CountKeysWithPrefix(job, prefix);
        }

        Span<byte> reply = stackalloc byte[CountReply.Size];
        CountReply.Write(reply, count);
        frame.Reply(Status.Ok, reply);
    }
}
