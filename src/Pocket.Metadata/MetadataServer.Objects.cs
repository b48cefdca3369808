using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    /// <summary>PutSmall (<see cref="PutSmallRequest"/>): the whole object in one round trip, kept inline here.</summary>
    private void HandlePutSmall(FrameContext frame, JobEntry job)
    {
        if (!PutSmallRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "put-small");
            return;
        }

        var data = request.Data;
        if (!CheckKey(frame, request.Key))
        {
            return;
        }

        if (data.Length > _options.Listener.Limits.MaxSmallObject)
        {
            frame.ReplyError(Status.FrameTooLarge, $"inline objects are at most {_options.Listener.Limits.MaxSmallObject} bytes; use create/commit");
            return;
        }

        if (!Failed(frame, _state.PutInline(job, request.Key, data, frame.Header.Flags)))
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>Get (<see cref="GetRequest"/>, reply <see cref="GetReply"/>): a small object's bytes, or read grants for a large one's extents.</summary>
    private void HandleGet(FrameContext frame, JobEntry job)
    {
        if (!GetRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "get");
            return;
        }

        // The key is looked up as characters on the stack: a get makes no string unless it fails.
        if (!CheckKey(frame, request.KeyUtf8, stackalloc char[MaxStackKeyChars], out var key))
        {
            return;
        }

        var deleteAfterRead = (frame.Header.Flags & FrameFlags.DeleteAfterRead) != 0;
        var result = _state.Get(job, key, request.Offset, request.Length, deleteAfterRead, frame.ConnectionId);
        if (Failed(frame, result))
        {
            return;
        }

        var read = result.Value;
        if (read.IsInline)
        {
            // The stored bytes go straight into the reply after their head, not through a body first (one copy of the
            // object per get, not two). The reply has sent or buffered them when it returns; only then may a delete
            // reuse their slot.
            Span<byte> head = stackalloc byte[GetReply.InlineHeadSize];
            GetReply.WriteInlineHead(head, read.Size);
            try
            {
                frame.Reply(Status.Ok, head, read.Inline);
            }
            finally
            {
                read.Block!.EndRead();
            }

            return;
        }

        var body = BodyWriter.Rent();
        try
        {
            GetReply.WriteExtentsHead(body, read.Size, read.Release);
            WriteGrants(body, read.Extents, GrantRights.Read);
            WriteAddressesIfAsked(frame, body, read.Extents, job);
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

        if (!CheckKey(frame, request.Key))
        {
            return;
        }

        // The address request is about this reply, not a property of the object.
        var result = _state.Create(job, request.Key, request.SizeHint, frame.Header.Flags & ~FrameFlags.NodeAddresses, frame.ConnectionId);
        if (Failed(frame, result))
        {
            return;
        }

        var body = new BodyWriter(256);
        CreateReply.WriteHead(body, result.Value.Handle);
        WriteGrants(body, result.Value.Extents, GrantRights.Read | GrantRights.Write);
        WriteAddressesIfAsked(frame, body, result.Value.Extents, job);
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

        var result = _state.Allocate(job, request.Handle, request.Bytes);
        if (Failed(frame, result))
        {
            return;
        }

        var body = new BodyWriter(256);
        WriteGrants(body, result.Value, GrantRights.Read | GrantRights.Write);
        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    /// <summary>Commit (<see cref="CommitRequest"/>): the object becomes visible at once; unused extents are freed.</summary>
    private void HandleCommit(FrameContext frame, JobEntry job)
    {
        if (!CommitRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "commit");
            return;
        }

        if (!Failed(frame, _state.Commit(job, request.Handle, request.Size)))
        {
            // The object's write grants die at the seal or at the first read, whichever reaches the node first (see
            // docs/protocol.md, "Grants"). The seal's pool thread is woken once the reply has left: woken before, it
            // took the core from the loop on a busy machine, and the writer's Commit waited for it.
            frame.Reply(Status.Ok);
            frame.AfterReplies(SealSoonCallback, this);
        }
    }

    /// <summary>Abort (<see cref="AbortRequest"/>): drops an unfinished write, or releases a delete-after-read object once read.</summary>
    private void HandleAbort(FrameContext frame, JobEntry job)
    {
        if (!AbortRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "abort");
            return;
        }

        if (!Failed(frame, _state.Abort(job, request.Handle)))
        {
            Revoke();
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>Lookup (<see cref="LookupRequest"/>, reply <see cref="LookupReply"/>): size, form, put flags and extents with their nodes' states.</summary>
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

        var result = _state.Lookup(job, key);
        if (Failed(frame, result))
        {
            return;
        }

        var info = result.Value;
        var body = BodyWriter.Rent();
        try
        {
            LookupReply.WriteHead(body, info.Size, info.IsInline, info.Flags, info.Extents.Length);
            foreach (var extent in info.Extents)
            {
                LookupReply.WriteExtent(body, extent);
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

        var result = _state.Delete(job, key, recursive);
        if (Failed(frame, result))
        {
            return;
        }

        Revoke();

        Span<byte> reply = stackalloc byte[DeleteReply.Size];
        DeleteReply.Write(reply, result.Value);
        frame.Reply(Status.Ok, reply);
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
        var limit = request.Limit;
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
            var sink = new ListReplySink(body);
            var begin = ListReply.Begin(body);
            var end = _state.List(job, prefix, request.StartAfter, limit, request.Delimited, ref sink);
            ListReply.End(body, begin, end.Count, end.Next);
            frame.Reply(Status.Ok, body.WrittenSpan);
        }
        finally
        {
            BodyWriter.Return(body);
        }
    }

    /// <summary>The largest list reply a writer is rented for up front (a pooled writer's largest size).</summary>
    private const int ListReplyHint = 64 << 10;

    /// <summary>Writes each entry of a list page into the reply as the state finds it.</summary>
    private readonly struct ListReplySink(BodyWriter body) : IListSink
    {
        public void Entry(ReadOnlySpan<char> key, long size, bool isPrefix) => ListReply.WriteEntry(body, key, size, isPrefix);
    }

    /// <summary>Count (<see cref="CountRequest"/>): the number of objects under a prefix.</summary>
    private void HandleCount(FrameContext frame, JobEntry job)
    {
        if (!CountRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "count");
            return;
        }

        if (!ObjectKey.IsValidPrefix(request.Prefix, _options.Listener.Limits, out var error))
        {
            frame.ReplyError(Status.InvalidKey, error);
            return;
        }

        Span<byte> reply = stackalloc byte[CountReply.Size];
        CountReply.Write(reply, _state.Count(job, request.Prefix));
        frame.Reply(Status.Ok, reply);
    }

    /// <summary>Most addresses a reply carries: the grants' nodes, then the job's other nodes up to this many in all.</summary>
    internal const int MaxReplyAddresses = 16;

    /// <summary>
    /// With <see cref="FrameFlags.NodeAddresses"/> on the request, the addresses of the distinct nodes of
    /// <paramref name="extents"/> after the grants, then those of the job's other placement nodes (up to
    /// <see cref="MaxReplyAddresses"/> in all): a fresh client then connects to the node of its first put or get without a
    /// ListNodes round trip, and to the job's other nodes later without one either.
    /// </summary>
    private void WriteAddressesIfAsked(FrameContext frame, BodyWriter body, IReadOnlyList<Extent> extents, JobEntry job)
    {
        if ((frame.Header.Flags & FrameFlags.NodeAddresses) == 0)
        {
            return;
        }

        var ids = new List<uint>(4);
        for (var i = 0; i < extents.Count; i++)
        {
            if (!ids.Contains(extents[i].NodeId))
            {
                ids.Add(extents[i].NodeId);
            }
        }

        _state.AddPlacementNodes(job, ids, Math.Max(ids.Count, MaxReplyAddresses));
        var nodes = new List<NodeAddress>(ids.Count);
        foreach (var id in ids)
        {
            if (_state.Nodes.TryGetAddress(id, out var address))
            {
                nodes.Add(address);
            }
        }

        NodeAddressList.Write(body, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(nodes));
    }

    /// <summary>
    /// Signs a grant per extent into the reply. Outside the metadata lock: an extent is a value and a node's secret never
    /// changes, so the HMACs cost the lock nothing; a node removed meanwhile gets a grant no node accepts.
    /// </summary>
    private void WriteGrants(BodyWriter body, IReadOnlyList<Extent> extents, GrantRights rights)
    {
        GrantList.WriteCount(body, extents.Count);
        var expires = (_options.TimeProvider.GetUtcNow() + _options.GrantLifetime).ToUnixTimeMilliseconds();

        // Indexed, not foreach: an enumerator over the interface is an allocation on every get of a large object.
        for (var i = 0; i < extents.Count; i++)
        {
            var extent = extents[i];
            GrantList.WriteGrant(body, ExtentGrant.Sign(_state.Nodes.SecretOf(extent.NodeId), extent.NodeId, extent.Generation, extent.Offset, extent.Length, rights, expires));
        }
    }
}
