using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Pocket.Metadata.Nodes;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata.Drain;

/// <summary>
/// Drain with live migration. A draining node gets no new blocks (placement only looks at live nodes); one background
/// task per draining node copies each of its live extents to another node and has the state switch the owning object
/// over. Old extents stay allocated and readable until the node is drained, so readers holding grants from before the
/// switch still read the right bytes; the copy's generation is new, so nothing stale can be served.
/// The bytes move node to node: the coordinator sends the target node a CopyExtent (a write grant for its space, the
/// source's address and a read grant for the source extent) and the target pulls them from the source, so this server
/// never holds data. A target that predates CopyExtent (it answers UnknownOpcode) gets the old path: read from the
/// source into this server, write to the target. The coordinator owns its connections to storage nodes (one per
/// node, made on first use) and never holds the metadata lock.
/// </summary>
internal sealed class DrainCoordinator(MetadataState state, FrameConnectionOptions connectionOptions, TimeProvider time, ILogger logger) : IAsyncDisposable
{
    /// <summary>How often a drain waiting for open writes (or finding nothing to copy yet) looks again.</summary>
    private static readonly TimeSpan Recheck = TimeSpan.FromMilliseconds(50);

    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<uint, Task> _drains = new();
    private readonly ConcurrentDictionary<uint, Lazy<Task<FrameConnection>>> _connections = new();

    // Targets that answered CopyExtent with UnknownOpcode (older nodes): copied to through this server instead.
    private readonly ConcurrentDictionary<uint, bool> _withoutCopy = new();
    private long _bytesReceived;

    /// <summary>
    /// Bytes of every reply the drain's connections received (headers, bodies, data): with node-to-node copies only
    /// the small replies of CopyExtent, with the old path every byte moved.
    /// </summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Starts draining a node, in the background (ListNodes shows progress). Draining twice is harmless.</summary>
    public Outcome Drain(uint nodeId)
    {
        var start = state.BeginDrain(nodeId);
        if (!start.IsOk)
        {
            return start.Outcome;
        }

        if (start.Value == DrainStart.Started)
        {
            // Only one caller sees Started for a node (the state switched it under its lock), so one task per drain.
            _drains[nodeId] = Task.Run(() => RunAsync(nodeId));
        }

        return Outcome.Ok;
    }

    private async Task RunAsync(uint nodeId)
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                var pass = state.NextDrainPass(nodeId);
                if (pass.Finished)
                {
                    return;
                }

                foreach (var work in pass.Work)
                {
                    token.ThrowIfCancellationRequested();
                    await MoveAsync(nodeId, work, token).ConfigureAwait(false);
                }

                if (pass.Work.Count == 0)
                {
                    await Task.Delay(Recheck, time, token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            // The drain must never take the server down; the node stays draining and the operator sees why.
            MetadataLog.DrainFailed(logger, nodeId, ex.Message);
        }
    }

    /// <summary>Copies one extent to space the state reserved for it, then has the state switch the object to the copy.</summary>
    private async Task MoveAsync(uint sourceId, DrainWork work, CancellationToken token)
    {
        if (state.ReserveCopy(sourceId, work) is not { } copies)
        {
            return;
        }

        var switched = false;
        try
        {
            var at = 0;
            foreach (var copy in copies)
            {
                await CopyAsync(work.Extent, at, copy, token).ConfigureAwait(false);
                at += copy.Length;
            }

            // The object may have been deleted (or its job ended) while the bytes were in flight; then the copy is
            // garbage, and the old extent was already freed by whoever removed the object.
            switched = state.SwitchToCopies(sourceId, work, copies);
        }
        catch (Exception ex) when (ex is ConnectionLostException or IOException or MigrationException or RequestTimeoutException)
        {
            // The source or the target failed; the next pass tries again (a dead source ends the drain).
            MetadataLog.MoveFailed(logger, sourceId, work.Key, ex.Message);
        }
        finally
        {
            if (!switched)
            {
                state.FreeCopies(copies);
            }
        }
    }

    /// <summary>Copies <paramref name="copy"/>.Length bytes from <paramref name="at"/> inside the source extent into the copy.</summary>
    private async Task CopyAsync(Extent source, int at, Extent copy, CancellationToken token)
    {
        if (!_withoutCopy.ContainsKey(copy.NodeId))
        {
            if (state.AddressOf(source.NodeId) is not var (host, port))
            {
                throw new MigrationException($"node {source.NodeId} is gone");
            }

            var body = new BodyWriter(CopyExtentRequest.MaxSize);
            CopyExtentRequest.Write(body, Grant(copy, GrantRights.Write), Grant(source, GrantRights.Read), at, host, (ushort)port);
            var reply = await SendAsync(copy.NodeId, Opcode.CopyExtent, body.WrittenMemory, default, default, token).ConfigureAwait(false);
            if (reply.IsOk)
            {
                return;
            }

            if (reply.Status != Status.UnknownOpcode)
            {
                throw new MigrationException($"copying {copy.Length} bytes from node {source.NodeId} to node {copy.NodeId} failed: {reply.Status} {reply.Message}");
            }

            if (_withoutCopy.TryAdd(copy.NodeId, true))
            {
                MetadataLog.CopyUnsupported(logger, copy.NodeId);
            }
        }

        var data = await ReadAsync(source, at, copy.Length, token).ConfigureAwait(false);
        await WriteAsync(copy, data, token).ConfigureAwait(false);
    }

    private async Task<byte[]> ReadAsync(Extent extent, int within, int length, CancellationToken token)
    {
        var head = new BodyWriter(ReadExtentRequest.Size);
        ReadExtentRequest.Write(head, Grant(extent, GrantRights.Read), within, length);
        var data = new byte[length];
        var reply = await SendAsync(extent.NodeId, Opcode.ReadExtent, head.WrittenMemory, default, data, token).ConfigureAwait(false);
        if (!reply.IsOk || reply.DataLength != length)
        {
            throw new MigrationException($"reading {length} bytes from node {extent.NodeId} failed: {reply.Status} {reply.Message}");
        }

        return data;
    }

    private async Task WriteAsync(Extent extent, ReadOnlyMemory<byte> data, CancellationToken token)
    {
        var head = new BodyWriter(WriteExtentRequest.HeadSize);
        WriteExtentRequest.Write(head, Grant(extent, GrantRights.Write), 0);
        var reply = await SendAsync(extent.NodeId, Opcode.WriteExtent, head.WrittenMemory, data, default, token).ConfigureAwait(false);
        if (!reply.IsOk)
        {
            throw new MigrationException($"writing {extent.Length} bytes to node {extent.NodeId} failed: {reply.Status} {reply.Message}");
        }
    }

    private async Task<FrameReply> SendAsync(uint nodeId, Opcode opcode, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data, Memory<byte> replyInto, CancellationToken token)
    {
        var connection = await ConnectionAsync(nodeId, token).ConfigureAwait(false);
        var reply = await connection.SendAsync(opcode, FrameFlags.None, JobToken.None, head, data, replyInto, token).ConfigureAwait(false);
        Interlocked.Add(ref _bytesReceived, FrameHeader.Size + reply.Body.Length + reply.DataLength);
        return reply;
    }

    private ExtentGrant Grant(Extent extent, GrantRights rights) =>
        ExtentGrant.Sign(state.Nodes.SecretOf(extent.NodeId), extent.NodeId, extent.Generation, extent.Offset, extent.Length, rights);

    /// <summary>One connection per storage node, made on first use and replaced once it breaks.</summary>
    private async Task<FrameConnection> ConnectionAsync(uint nodeId, CancellationToken token)
    {
        if (state.AddressOf(nodeId) is not var (host, port))
        {
            throw new MigrationException($"node {nodeId} is gone");
        }

        while (true)
        {
            var lazy = _connections.GetOrAdd(nodeId, _ => new Lazy<Task<FrameConnection>>(() => FrameConnection.ConnectAsync(host, port, connectionOptions, CancellationToken.None)));
            try
            {
                var connection = await lazy.Value.WaitAsync(token).ConfigureAwait(false);
                if (connection.IsConnected)
                {
                    return connection;
                }

                // Broken (or closed by the node as idle): replaced; if the node is really gone the new connect fails.
                _connections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                connection.Dispose();
            }
            catch (ConnectionLostException)
            {
                _connections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                throw;
            }
        }
    }

    /// <summary>Stops every drain (a draining node stays draining) and closes the connections to storage nodes.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_drains.Values).ConfigureAwait(false);
        foreach (var lazy in _connections.Values)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                await lazy.Value.Result.DisposeAsync().ConfigureAwait(false);
            }
        }

        _connections.Clear();
        _stop.Dispose();
    }

    private sealed class MigrationException(string message) : Exception(message);
}
