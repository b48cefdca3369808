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
/// source into this server, write to the target. The coordinator talks to storage nodes over the server's
/// <see cref="StorageLinks"/> (one connection per node, made on first use) and never holds the metadata lock.
/// </summary>
internal sealed class DrainCoordinator(MetadataState state, StorageLinks links, JobToken clusterToken, TimeProvider time, ILogger logger) : IAsyncDisposable
{
    /// <summary>How often a drain waiting for open writes (or finding nothing to copy yet) looks again.</summary>
    private static readonly TimeSpan Recheck = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// The longest wait after a pass in which every move failed. A copy that cannot succeed (a target that cannot
    /// reach its source: TLS or firewall) would otherwise be retried at once, forever: a warning per extent in a
    /// tight loop. Waits double from <see cref="Recheck"/> up to this, and any move that succeeds resets them.
    /// </summary>
    internal static readonly TimeSpan MaxFailedPassBackoff = TimeSpan.FromSeconds(10);

    /// <summary>A copy's grants are used at once, for one extent (a few MiB): a minute is ample, and they die soon after.</summary>
    private static readonly TimeSpan CopyGrantLifetime = TimeSpan.FromMinutes(1);

    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<uint, Task> _drains = new();

    // Targets that answered CopyExtent with UnknownOpcode (older nodes): copied to through this server instead.
    private readonly ConcurrentDictionary<uint, bool> _withoutCopy = new();
    private long _bytesReceived;
    private long _movesFailed;

    /// <summary>
    /// Bytes of every reply the drain's connections received (headers, bodies, data): with node-to-node copies only
    /// the small replies of CopyExtent, with the old path every byte moved.
    /// </summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Moves that failed (each to be tried again in a later pass).</summary>
    public long MovesFailed => Interlocked.Read(ref _movesFailed);

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
            var backoff = Recheck;
            while (!token.IsCancellationRequested)
            {
                var pass = state.NextDrainPass(nodeId);
                if (pass.Finished)
                {
                    return;
                }

                var failed = 0;
                foreach (var work in pass.Work)
                {
                    token.ThrowIfCancellationRequested();
                    if (!await MoveAsync(nodeId, work, token).ConfigureAwait(false))
                    {
                        failed++;
                    }
                }

                if (pass.Work.Count == 0)
                {
                    await Task.Delay(Recheck, time, token).ConfigureAwait(false);
                }
                else if (failed == pass.Work.Count)
                {
                    await Task.Delay(backoff, time, token).ConfigureAwait(false);
                    backoff = NextBackoff(backoff);
                }
                else
                {
                    backoff = Recheck;
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

    /// <summary>The wait after another pass in which every move failed: twice the last, at most <see cref="MaxFailedPassBackoff"/>.</summary>
    internal static TimeSpan NextBackoff(TimeSpan last) => TimeSpan.FromTicks(Math.Min(last.Ticks * 2, MaxFailedPassBackoff.Ticks));

    /// <summary>
    /// Copies one extent to space the state reserved for it, then has the state switch the object to the copy. False
    /// when the copy failed (it is tried again in a later pass); true otherwise, also when there was nothing to move.
    /// </summary>
    private async Task<bool> MoveAsync(uint sourceId, DrainWork work, CancellationToken token)
    {
        if (state.ReserveCopy(sourceId, work) is not { } copies)
        {
            return true;
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
            Interlocked.Increment(ref _movesFailed);
            return false;
        }
        finally
        {
            if (!switched)
            {
                state.FreeCopies(copies);
            }
        }

        return true;
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
        // The cluster token: storage nodes take a CopyExtent only from the metadata server.
        var reply = await connection.SendAsync(opcode, FrameFlags.None, clusterToken, head, data, replyInto, cancellationToken: token).ConfigureAwait(false);
        Interlocked.Add(ref _bytesReceived, FrameHeader.Size + reply.Body.Length + reply.DataLength);
        return reply;
    }

    private ExtentGrant Grant(Extent extent, GrantRights rights) =>
        ExtentGrant.Sign(state.Nodes.SecretOf(extent.NodeId), extent.NodeId, extent.Generation, extent.Offset, extent.Length, rights, (time.GetUtcNow() + CopyGrantLifetime).ToUnixTimeMilliseconds());

    private async Task<FrameConnection> ConnectionAsync(uint nodeId, CancellationToken token) =>
        await links.GetAsync(nodeId, token).ConfigureAwait(false) ?? throw new MigrationException($"node {nodeId} is gone");

    /// <summary>Stops every drain (a draining node stays draining); the links are closed by their owner.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_drains.Values).ConfigureAwait(false);
        _stop.Dispose();
    }

    private sealed class MigrationException(string message) : Exception(message);
}
