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
/// switch still read the right bytes; the copy's generation is new, so nothing stale can be served. The coordinator
/// copies over the server's <see cref="StorageLinks"/> and never holds the metadata lock.
/// </summary>
internal sealed class DrainCoordinator(MetadataState state, StorageLinks links, TimeProvider time, ILogger logger) : IAsyncDisposable
{
    /// <summary>How often a drain waiting for open writes (or finding nothing to copy yet) looks again.</summary>
    private static readonly TimeSpan Recheck = TimeSpan.FromMilliseconds(50);

    /// <summary>A copy's grants are used at once, for one extent (a few MiB): a minute is ample, and they die soon after.</summary>
    private static readonly TimeSpan CopyGrantLifetime = TimeSpan.FromMinutes(1);

    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<uint, Task> _drains = new();

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
            var data = await ReadAsync(work.Extent, token).ConfigureAwait(false);
            var at = 0;
            foreach (var copy in copies)
            {
                await WriteAsync(copy, data.AsMemory(at, copy.Length), token).ConfigureAwait(false);
                at += copy.Length;
            }

            // The object may have been deleted (or its job ended) while the bytes were in flight; then the copy is
            // garbage, and the old extent was already freed by whoever removed the object.
            switched = state.SwitchToCopies(sourceId, work, copies);
        }
        catch (Exception ex) when (ex is ConnectionLostException or IOException or MigrationException)
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

    private async Task<byte[]> ReadAsync(Extent extent, CancellationToken token)
    {
        var head = new BodyWriter(ReadExtentRequest.Size);
        ReadExtentRequest.Write(head, Grant(extent, GrantRights.Read), 0, extent.Length);
        var data = new byte[extent.Length];
        var connection = await ConnectionAsync(extent.NodeId, token).ConfigureAwait(false);
        var reply = await connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, replyInto: data, cancellationToken: token).ConfigureAwait(false);
        if (!reply.IsOk || reply.DataLength != extent.Length)
        {
            throw new MigrationException($"reading {extent.Length} bytes from node {extent.NodeId} failed: {reply.Status} {reply.Message}");
        }

        return data;
    }

    private async Task WriteAsync(Extent extent, ReadOnlyMemory<byte> data, CancellationToken token)
    {
        var head = new BodyWriter(WriteExtentRequest.HeadSize);
        WriteExtentRequest.Write(head, Grant(extent, GrantRights.Write), 0);
        var connection = await ConnectionAsync(extent.NodeId, token).ConfigureAwait(false);
        var reply = await connection.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, head.WrittenMemory, data, cancellationToken: token).ConfigureAwait(false);
        if (!reply.IsOk)
        {
            throw new MigrationException($"writing {extent.Length} bytes to node {extent.NodeId} failed: {reply.Status} {reply.Message}");
        }
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
