using Microsoft.Extensions.Logging;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata.Nodes;

/// <summary>
/// Sends the seals and forgets the state queued (<see cref="RevokeExtentsRequest"/>) to the storage nodes: one batched
/// request per node, all nodes in parallel. A flush is a group commit: it returns once everything queued before it was
/// sent, so Abort and Delete reply only after their nodes confirmed (Commit's seals go in a background flush), and
/// concurrent callers share one round trip.
/// A node that does not answer within the timeout is not waited for again: its revocations are retried in the
/// background (<see cref="RetryAsync"/>) until they get through, the node is gone, or the grants they revoke have
/// expired anyway. Never holds the metadata lock while it sends.
/// </summary>
internal sealed class ExtentRevoker(MetadataState state, StorageLinks links, TimeSpan timeout, TimeSpan retryFor, TimeProvider time, ILogger logger)
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Lock _retryLock = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<uint, bool> _unreachable = new();
    private List<(PendingRevocation Revocation, long Until)> _retries = [];
    private long _flushed;

    /// <summary>Sends everything queued so far; returns once each node confirmed, or was given up on for now.</summary>
    public async Task FlushAsync(CancellationToken token)
    {
        var target = state.RevocationsQueued;
        if (Volatile.Read(ref _flushed) >= target)
        {
            return;
        }

        await _gate.WaitAsync(token).ConfigureAwait(false);
        try
        {
            // Another flush may have sent ours while we waited.
            if (_flushed >= target)
            {
                return;
            }

            var (revocations, queued) = state.TakeRevocations();
            if (revocations.Count > 0)
            {
                var failed = await SendAsync(revocations, skipUnreachable: true).ConfigureAwait(false);
                if (failed.Count > 0)
                {
                    var until = time.GetTimestamp() + (long)(retryFor.TotalSeconds * time.TimestampFrequency);
                    lock (_retryLock)
                    {
                        _retries.AddRange(failed.Select(r => (r, until)));
                    }
                }
            }

            Volatile.Write(ref _flushed, queued);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Retries the revocations nodes did not take, dropping those past their deadline; then flushes the queue.</summary>
    public async Task RetryAsync(CancellationToken token)
    {
        List<(PendingRevocation Revocation, long Until)> retries;
        lock (_retryLock)
        {
            (retries, _retries) = (_retries, []);
        }

        if (retries.Count > 0)
        {
            var now = time.GetTimestamp();
            var due = retries.Where(r => r.Until > now).ToList();
            var failed = (await SendAsync([.. due.Select(r => r.Revocation)], skipUnreachable: false).ConfigureAwait(false)).ToHashSet();
            var stillFailing = due.Where(r => failed.Contains(r.Revocation)).ToList();
            lock (_retryLock)
            {
                _retries.AddRange(stillFailing);
            }
        }

        await FlushAsync(token).ConfigureAwait(false);
    }

    /// <summary>Revocations waiting for a retry (for tests and metrics).</summary>
    public int RetryCount
    {
        get
        {
            lock (_retryLock)
            {
                return _retries.Count;
            }
        }
    }

    /// <summary>Sends each node its revocations in parallel; returns those a live node did not confirm.</summary>
    private async Task<List<PendingRevocation>> SendAsync(List<PendingRevocation> revocations, bool skipUnreachable)
    {
        var byNode = revocations.GroupBy(r => r.NodeId).ToList();
        var results = await Task.WhenAll(byNode.Select(group => SendToNodeAsync(group.Key, [.. group.Select(r => r.Revocation)], skipUnreachable))).ConfigureAwait(false);
        var failed = new List<PendingRevocation>();
        for (var i = 0; i < byNode.Count; i++)
        {
            if (!results[i])
            {
                failed.AddRange(byNode[i]);
            }
        }

        return failed;
    }

    /// <summary>True when the node confirmed every revocation, or is gone (its blocks are gone with it).</summary>
    private async Task<bool> SendToNodeAsync(uint nodeId, Revocation[] revocations, bool skipUnreachable)
    {
        // A node that just failed to answer is not waited for on a client's request again until the background retry
        // (which always tries) got through: one unresponsive node must not slow every commit by the timeout.
        if (skipUnreachable && _unreachable.ContainsKey(nodeId))
        {
            return false;
        }

        using var deadline = new CancellationTokenSource(timeout, time);
        try
        {
            var connection = await links.GetAsync(nodeId, deadline.Token).ConfigureAwait(false);
            if (connection is null)
            {
                return true;
            }

            var secret = state.Nodes.SecretOf(nodeId).ToArray();
            var body = new BodyWriter();
            for (var at = 0; at < revocations.Length; at += RevokeExtentsRequest.MaxEntries)
            {
                body.Reset();
                var count = Math.Min(RevokeExtentsRequest.MaxEntries, revocations.Length - at);
                RevokeExtentsRequest.Write(body, secret, nodeId, revocations.AsSpan(at, count));
                var reply = await connection.SendAsync(Opcode.RevokeExtents, FrameFlags.None, JobToken.None, body.WrittenMemory, cancellationToken: deadline.Token).ConfigureAwait(false);
                if (!reply.IsOk)
                {
                    // Unauthorized here means the node re-registered under a new id since: the old id's blocks are gone.
                    MetadataLog.RevokeFailed(logger, nodeId, revocations.Length, $"{reply.Status}: {reply.Message}");
                    return reply.Status == Status.Unauthorized;
                }
            }

            _unreachable.TryRemove(nodeId, out _);
            return true;
        }
        catch (Exception ex) when (ex is ConnectionLostException or IOException or OperationCanceledException)
        {
            MetadataLog.RevokeFailed(logger, nodeId, revocations.Length, ex is OperationCanceledException ? $"no answer within {timeout.TotalSeconds:0.#} s" : ex.Message);
            _unreachable[nodeId] = true;
            return false;
        }
    }
}
