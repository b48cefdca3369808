using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

internal sealed partial class MetadataState
{
    /// <summary>
    /// Stores a small object inline. Its bytes are copied into the inline store before the lock is taken (a 64 KiB copy
    /// under it would hold up every other request), and the copy is given back when the put is refused.
    /// </summary>
    public Outcome PutInline(JobEntry job, string key, ReadOnlySpan<byte> data, FrameFlags flags)
    {
        // A put the inline bound plainly has no room for is refused below without a copy (the count is read unlocked,
        // as a hint; the check under the lock decides).
        var block = data.Length <= _inlineCapacity - Volatile.Read(ref _inlineBytes) ? Inline.Store(data) : null;
        lock (_lock)
        {
            var refused = job.RetiredUntil is not null
                ? RetiredFailure(job)
                : job.Objects.ContainsKey(key) || job.Reserved.Contains(key)
                    ? Outcome.Fail(Status.Exists, $"object '{key}' exists")

                    // A job's quotas refuse the object whichever way it is written; only the room for inline bytes
                    // sends it to the storage nodes.
                    : CheckQuota(job, key, data.Length) ?? CheckInlineRoom(key, data.Length) ?? (block is null ? NoSlot(data.Length) : null);
            if (refused is { } failure)
            {
                block?.Release();
                return failure;
            }

            _inlineBytes += data.Length;
            job.InlineBytes += data.Length;
            AddObject(job, new ObjectEntry { Key = key, Size = data.Length, Inline = block, Flags = flags });
            return Outcome.Ok;
        }
    }

    /// <summary>
    /// Reads an object: a range of an inline one, or the extents of a large one (whose whole object the client reads
    /// through grants). With <paramref name="deleteAfterRead"/> the object leaves the namespace now; a large object's
    /// extents stay allocated under a release handle of <paramref name="connectionId"/> until the reader is done.
    /// </summary>
    public Result<ObjectRead> Get(JobEntry job, ReadOnlySpan<char> key, long offset, long length, bool deleteAfterRead, long connectionId)
    {
        lock (_lock)
        {
            if (!job.ObjectsByChars.TryGetValue(key, out var entry))
            {
                return Outcome.Fail(Status.NotFound, $"object '{key}' not found");
            }

            if (offset < 0 || offset > entry.Size || length < -1 || (length >= 0 && length > entry.Size - offset))
            {
                return Outcome.Fail(Status.BadRequest, $"range {offset}+{length} is outside object '{key}' of {entry.Size} bytes");
            }

            // An inline object has no extents: no node to ask about (the checks cost a small get two interface walks).
            if (entry.Extents.Length > 0 && Nodes.LostNode(entry.Extents) is { } lost)
            {
                return Outcome.Fail(Status.NodeLost, $"object '{key}' lost: storage node {lost} is dead");
            }

            if (entry.Extents.Length > 0 && Nodes.UnavailableNode(entry.Extents) is { } unavailable)
            {
                return Outcome.Fail(Status.NodeUnavailable, $"object '{key}' is on storage node {unavailable}, which missed its heartbeats; retry shortly (it is declared dead, and the object lost, after {Nodes.NodeTimeout.TotalSeconds:0.#} s of silence)");
            }

            if (entry.Inline is { } inline)
            {
                // Counted as a reader before a delete-after-read frees it: the slot stays this reply's until EndRead.
                var count = length < 0 ? entry.Size - offset : length;
                inline.BeginRead();
                if (deleteAfterRead)
                {
                    RemoveObject(job, entry.Key);
                    FreeObject(job, entry);
                }

                return new ObjectRead(entry.Size, inline, (int)offset, (int)count, [], 0);
            }

            ulong release = 0;
            if (deleteAfterRead)
            {
                // The object leaves the namespace now; its extents stay allocated until the reader is done.
                RemoveObject(job, entry.Key);
                job.StoredBytes -= entry.Size;
                var handle = new OpenHandle { Id = ++_nextHandle, Job = job, Key = entry.Key, ConnectionId = connectionId, IsWrite = false };
                handle.Extents.AddRange(entry.Extents);
                _handles[handle.Id] = handle;
                release = handle.Id;
            }

            // An entry's extent array is never changed (a drain switches the whole entry), so it is read after the lock.
            return new ObjectRead(entry.Size, null, 0, 0, entry.Extents, release);
        }
    }

    /// <summary>Reserves a key for a write of <paramref name="connectionId"/> and extents for its size hint (none for 0).</summary>
    public Result<OpenWrite> Create(JobEntry job, string key, long sizeHint, FrameFlags flags, long connectionId)
    {
        lock (_lock)
        {
            if (job.RetiredUntil is not null)
            {
                return RetiredFailure(job);
            }

            if (job.Objects.ContainsKey(key) || job.Reserved.Contains(key))
            {
                return Outcome.Fail(Status.Exists, $"object '{key}' exists");
            }

            if (CheckQuota(job, key, Math.Max(sizeHint, 0)) is { } exceeded)
            {
                return exceeded;
            }

            var handle = new OpenHandle { Id = ++_nextHandle, Job = job, Key = key, ConnectionId = connectionId, Flags = flags, IsWrite = true };
            if (sizeHint > 0)
            {
                var status = Allocate(job, sizeHint, handle.Extents, out var error);
                if (status != Status.Ok)
                {
                    return Outcome.Fail(status, $"cannot store '{key}': {error}");
                }

                handle.Allocated = sizeHint;
                job.PendingBytes += sizeHint;
            }

            Reserve(handle);
            _handles[handle.Id] = handle;
            return new OpenWrite(handle.Id, [.. handle.Extents]);
        }
    }

    /// <summary>New extents for <paramref name="bytes"/> more of an open write, appended to the object.</summary>
    public Result<Extent[]> Allocate(JobEntry job, ulong handleId, long bytes)
    {
        lock (_lock)
        {
            if (job.RetiredUntil is not null)
            {
                return RetiredFailure(job);
            }

            if (!TryGetWriteHandle(job, handleId, out var handle))
            {
                return NoWrite(handleId);
            }

            if (bytes <= 0)
            {
                return Outcome.Fail(Status.BadRequest, "allocate needs a positive byte count");
            }

            if (CheckQuota(job, null, bytes) is { } exceeded)
            {
                return exceeded;
            }

            var added = new List<Extent>();
            var status = Allocate(job, bytes, added, out var error);
            if (status != Status.Ok)
            {
                return Outcome.Fail(status, $"cannot store '{handle.Key}': {error}");
            }

            handle.Extents.AddRange(added);
            handle.Allocated += bytes;
            job.PendingBytes += bytes;
            return added.ToArray();
        }
    }

    /// <summary>Publishes an open write of <paramref name="size"/> bytes: it becomes visible at once; extents past its end are freed.</summary>
    public Outcome Commit(JobEntry job, ulong handleId, long size)
    {
        lock (_lock)
        {
            if (!TryGetWriteHandle(job, handleId, out var handle))
            {
                return NoWrite(handleId);
            }

            if (size < 0 || size > handle.Allocated)
            {
                return Outcome.Fail(Status.BadRequest, $"commit size {size} is outside the {handle.Allocated} bytes allocated");
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
                if (use < extent.Length && Nodes.TryGet(extent.NodeId, out var node))
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
            if (Nodes.LostNode(entry.Extents) is { } lost)
            {
                ReleaseHandle(handle);
                return Outcome.Fail(Status.NodeLost, $"object '{handle.Key}' lost while being written: storage node {lost} is dead");
            }

            _handles.Remove(handle.Id);
            Unreserve(handle);
            Nodes.FreeExtents(toFree);
            Nodes.Seal(entry.Extents);
            job.StoredBytes += size;
            AddObject(job, entry);
            return Outcome.Ok;
        }
    }

    /// <summary>Drops an unfinished write, or releases a delete-after-read object once read.</summary>
    public Outcome Abort(JobEntry job, ulong handleId)
    {
        lock (_lock)
        {
            if (!_handles.TryGetValue(handleId, out var handle) || handle.Job != job)
            {
                return Outcome.Fail(Status.NotFound, $"no open handle {handleId}");
            }

            ReleaseHandle(handle);
            return Outcome.Ok;
        }
    }

    /// <summary>An object's size, form, put flags and extents, each with its node's state now.</summary>
    public Result<ObjectInfo> Lookup(JobEntry job, ReadOnlySpan<char> key)
    {
        lock (_lock)
        {
            if (!job.ObjectsByChars.TryGetValue(key, out var entry))
            {
                return Outcome.Fail(Status.NotFound, $"object '{key}' not found");
            }

            // An inline object (the lookup on the small-object path) has no extents and costs no array.
            var extents = entry.Extents.Length == 0 ? [] : new LookupExtent[entry.Extents.Length];
            for (var i = 0; i < extents.Length; i++)
            {
                var extent = entry.Extents[i];
                extents[i] = new LookupExtent(extent.NodeId, Nodes.StateOf(extent), extent.Offset, extent.Length);
            }

            return new ObjectInfo(entry.Size, entry.Inline is not null, entry.Flags, extents);
        }
    }

    /// <summary>Deletes one object, or with <paramref name="recursive"/> every object under a prefix; returns how many.</summary>
    public Result<long> Delete(JobEntry job, string key, bool recursive)
    {
        lock (_lock)
        {
            if (!recursive)
            {
                if (!job.Objects.TryGetValue(key, out var entry))
                {
                    return Outcome.Fail(Status.NotFound, $"object '{key}' not found");
                }

                RemoveObject(job, key);
                FreeObject(job, entry);
                return 1L;
            }

            long deleted = 0;
            foreach (var k in KeysWithPrefix(job, key))
            {
                var entry = job.Objects[k];
                RemoveObject(job, k);
                FreeObject(job, entry);
                deleted++;
            }

            // A dictionary keeps the buckets it grew to: after a large delete, give most of them back.
            if (deleted >= TrimAfterObjects && job.Objects.Count < deleted)
            {
                job.Objects.TrimExcess();
            }

            return deleted;
        }
    }

    /// <summary>The number of objects under a prefix.</summary>
    public long Count(JobEntry job, string prefix)
    {
        lock (_lock)
        {
            if (prefix.Length == 0)
            {
                // Keys of layered tools (ObjectKey.HiddenRoot) are not the job's objects as its users see them.
                return job.Keys.Count - CountFrom(job, ObjectKey.HiddenRoot);
            }

            return CountFrom(job, prefix);
        }
    }

    /// <summary>
    /// One page of keys under a prefix after start-after, handed to <paramref name="sink"/> in key order as they are
    /// found (nothing is collected first). With <paramref name="delimited"/>, keys with a '/' past the prefix fold into
    /// one "directory" entry ending in '/'. Seeks to the start in O(log n) and past each folded directory, so a page
    /// costs O(page) whatever lies before or inside it.
    /// </summary>
    public ListPageEnd List<TSink>(JobEntry job, string prefix, string startAfter, int limit, bool delimited, ref TSink sink)
        where TSink : struct, IListSink
    {
        lock (_lock)
        {
            var entries = startAfter.Length > 0 && string.CompareOrdinal(startAfter, prefix) > 0
                ? job.Keys.From(startAfter, exclusive: true)
                : job.Keys.From(prefix, exclusive: false);
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

                // Keys under the hidden root sort after every other key: a listing that did not ask for them ends there.
                if (prefix.Length == 0 && key[0] == ObjectKey.HiddenRoot[0])
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

                        sink.Entry(directory, 0, isPrefix: true);
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

                sink.Entry(key, entry.Size, isPrefix: false);
                count++;
                last = key;
                lastLength = key.Length;
            }

            // The next page starts after the last entry; after a directory entry that skips all of its keys, because
            // a directory not above start-after is never listed again.
            return more ? new ListPageEnd(count, last, lastLength) : new ListPageEnd(count, null, 0);
        }
    }

    private bool TryGetWriteHandle(JobEntry job, ulong id, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out OpenHandle? handle) =>
        _handles.TryGetValue(id, out handle) && handle.Job == job && handle.IsWrite;

    private static Outcome NoWrite(ulong id) => Outcome.Fail(Status.NotFound, $"no open write {id}");

    private static long CountFrom(JobEntry job, string prefix)
    {
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
}
