using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Pocket.Metadata.Placement;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

/// <summary>
/// Drain with live migration. A draining node gets no new blocks (placement only looks at live nodes); a
/// background task copies each of its live extents to another node and switches the owning object over under
/// the lock. Old extents stay allocated and readable until the node is drained, so readers holding grants from
/// before the switch still read the right bytes; the copy's generation is new, so nothing stale can be served.
/// </summary>
public sealed partial class MetadataServer
{
    /// <summary>How often a drain waiting for open writes (or finding nothing to copy yet) looks again.</summary>
    private static readonly TimeSpan DrainRecheck = TimeSpan.FromMilliseconds(50);

    private readonly ConcurrentDictionary<uint, Lazy<Task<FrameConnection>>> _storageConnections = new();

    /// <summary>DrainNode (<see cref="DrainNodeRequest"/>): the copy runs in the background (see ListNodes for progress).</summary>
    private void HandleDrainNode(FrameContext frame)
    {
        if (!DrainNodeRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "drain-node");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        lock (_lock)
        {
            if (!_nodes.TryGetValue(id, out var node) || node.State == NodeState.Dead)
            {
                frame.ReplyError(Status.NotFound, $"node {id} is not registered (or is dead)");
                return;
            }

            // Draining twice is harmless: the first drain goes on, a drained node stays drained. A standby node
            // never held a block, so it is drained at once.
            if (node.State == NodeState.Standby)
            {
                node.State = NodeState.Drained;
            }
            else if (node.State == NodeState.Live)
            {
                node.State = NodeState.Draining;
                MetadataLog.DrainStarted(_logger, id, node.UsedBytes);
                node.DrainTask = Task.Run(() => DrainAsync(node));
            }
        }

        frame.Reply(Status.Ok);
    }

    private async Task DrainAsync(NodeEntry node)
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                var work = new List<(JobEntry Job, string Key, Extent Extent)>();
                bool waiting;
                lock (_lock)
                {
                    if (node.State != NodeState.Draining)
                    {
                        return;
                    }

                    // Ended jobs' keep-after-job objects live on until their TTL, so they move too.
                    foreach (var job in _jobsById.Values.Concat(_retiredJobs))
                    {
                        foreach (var entry in job.Objects.Values)
                        {
                            foreach (var extent in entry.Extents)
                            {
                                if (extent.NodeId == node.Id)
                                {
                                    work.Add((job, entry.Key, extent));
                                }
                            }
                        }
                    }

                    // Open writes commit on this node and are moved on the next pass; delete-after-read handles
                    // keep their extents until the reader is done, so both hold the node up.
                    waiting = _handles.Values.Any(h => h.Extents.Any(e => e.NodeId == node.Id));
                    if (work.Count == 0 && !waiting)
                    {
                        FreeExtents(node.Retired);
                        node.Retired.Clear();
                        node.State = NodeState.Drained;
                        MetadataLog.NodeDrained(_logger, node.Id, node.MovedBytes);
                        return;
                    }
                }

                foreach (var (job, key, extent) in work)
                {
                    token.ThrowIfCancellationRequested();
                    await MoveExtentAsync(node, job, key, extent, token).ConfigureAwait(false);
                }

                if (work.Count == 0)
                {
                    await Task.Delay(DrainRecheck, _options.TimeProvider, token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            // The drain must never take the server down; the node stays draining and the operator sees why.
            MetadataLog.DrainFailed(_logger, node.Id, ex.Message);
        }
    }

    /// <summary>Copies one extent to a node chosen like a new block of its job, then switches the object to the copy.</summary>
    private async Task MoveExtentAsync(NodeEntry source, JobEntry job, string key, Extent old, CancellationToken token)
    {
        var copies = new List<Extent>();
        lock (_lock)
        {
            if (source.State != NodeState.Draining || !StillHolds(job, key, old))
            {
                return;
            }

            if (PlacementPolicy.Choose(job, LiveNodes(), old.Length, Random.Shared) is not { } target)
            {
                MetadataLog.DrainStalled(_logger, source.Id, key, old.Length);
                return;
            }

            ExtentAllocator.AllocateOn(target, old.Length, copies);
        }

        var switched = false;
        try
        {
            var data = await ReadExtentAsync(source, old, token).ConfigureAwait(false);
            var at = 0;
            foreach (var copy in copies)
            {
                await WriteExtentAsync(copy, data.AsMemory(at, copy.Length), token).ConfigureAwait(false);
                at += copy.Length;
            }

            lock (_lock)
            {
                // The object may have been deleted (or its job ended) while the bytes were in flight; then the
                // copy is garbage, and the old extent was already freed by whoever removed the object.
                if (source.State == NodeState.Draining && StillHolds(job, key, old))
                {
                    var entry = job.Objects[key];
                    var extents = new List<Extent>(entry.Extents.Length + copies.Count - 1);
                    foreach (var extent in entry.Extents)
                    {
                        if (extent == old)
                        {
                            extents.AddRange(copies);
                        }
                        else
                        {
                            extents.Add(extent);
                        }
                    }

                    var moved = new ObjectEntry { Key = entry.Key, Size = entry.Size, Extents = [.. extents], Flags = entry.Flags };
                    job.Objects[key] = moved;
                    job.Keys.Set(moved);
                    job.TierBytes[(int)old.Tier] -= old.Length;
                    foreach (var copy in copies)
                    {
                        job.TierBytes[(int)copy.Tier] += copy.Length;
                    }

                    source.Retired.Add(old);
                    source.MovedBytes += old.Length;
                    switched = true;
                }
            }
        }
        catch (Exception ex) when (ex is ConnectionLostException or IOException or MigrationException)
        {
            // The source or the target failed; the next pass tries again (a dead source ends the drain).
            MetadataLog.MoveFailed(_logger, source.Id, key, ex.Message);
        }
        finally
        {
            if (!switched)
            {
                lock (_lock)
                {
                    FreeExtents(copies);
                }
            }
        }
    }

    private bool StillHolds(JobEntry job, string key, Extent extent) =>
        ((_jobsById.TryGetValue(job.Id, out var current) && current == job) || _retiredJobs.Contains(job))
        && job.Objects.TryGetValue(key, out var entry) && Array.IndexOf(entry.Extents, extent) >= 0;

    private async Task<byte[]> ReadExtentAsync(NodeEntry node, Extent extent, CancellationToken token)
    {
        var head = new BodyWriter(ReadExtentRequest.Size);
        ReadExtentRequest.Write(head, Grant(node.Secret, extent, GrantRights.Read), 0, extent.Length);
        var data = new byte[extent.Length];
        var connection = await StorageConnectionAsync(node.Id, token).ConfigureAwait(false);
        var reply = await connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, replyInto: data, cancellationToken: token).ConfigureAwait(false);
        if (!reply.IsOk || reply.DataLength != extent.Length)
        {
            throw new MigrationException($"reading {extent.Length} bytes from node {node.Id} failed: {reply.Status} {reply.Message}");
        }

        return data;
    }

    private async Task WriteExtentAsync(Extent extent, ReadOnlyMemory<byte> data, CancellationToken token)
    {
        byte[] secret;
        lock (_lock)
        {
            secret = _nodes.TryGetValue(extent.NodeId, out var node) ? node.Secret : [];
        }

        var head = new BodyWriter(WriteExtentRequest.HeadSize);
        WriteExtentRequest.Write(head, Grant(secret, extent, GrantRights.Write), 0);
        var connection = await StorageConnectionAsync(extent.NodeId, token).ConfigureAwait(false);
        var reply = await connection.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, data, cancellationToken: token).ConfigureAwait(false);
        if (!reply.IsOk)
        {
            throw new MigrationException($"writing {extent.Length} bytes to node {extent.NodeId} failed: {reply.Status} {reply.Message}");
        }
    }

    private static ExtentGrant Grant(byte[] secret, Extent extent, GrantRights rights) =>
        ExtentGrant.Sign(secret, extent.NodeId, extent.Generation, extent.Offset, extent.Length, rights);

    /// <summary>One connection per storage node, made on first use and replaced once it breaks.</summary>
    private async Task<FrameConnection> StorageConnectionAsync(uint nodeId, CancellationToken token)
    {
        string host;
        int port;
        lock (_lock)
        {
            if (!_nodes.TryGetValue(nodeId, out var node) || node.State == NodeState.Dead)
            {
                throw new MigrationException($"node {nodeId} is gone");
            }

            (host, port) = (node.Host, node.Port);
        }

        while (true)
        {
            var lazy = _storageConnections.GetOrAdd(nodeId, _ => new Lazy<Task<FrameConnection>>(() => FrameConnection.ConnectAsync(host, port, _options.StorageConnection, CancellationToken.None)));
            try
            {
                var connection = await lazy.Value.WaitAsync(token).ConfigureAwait(false);
                if (connection.IsConnected)
                {
                    return connection;
                }

                // Broken (or closed by the node as idle): replaced; if the node is really gone the new connect fails.
                _storageConnections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                connection.Dispose();
            }
            catch (ConnectionLostException)
            {
                _storageConnections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                throw;
            }
        }
    }

    private async Task StopDrainsAsync()
    {
        Task[] drains;
        lock (_lock)
        {
            drains = [.. _nodes.Values.Select(n => n.DrainTask).OfType<Task>()];
        }

        await Task.WhenAll(drains).ConfigureAwait(false);
        foreach (var lazy in _storageConnections.Values)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                await lazy.Value.Result.DisposeAsync().ConfigureAwait(false);
            }
        }

        _storageConnections.Clear();
    }

    private sealed class MigrationException(string message) : Exception(message);
}
