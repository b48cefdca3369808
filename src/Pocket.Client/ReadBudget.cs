namespace Pocket.Client;

/// <summary>
/// The reply bytes a client may have asked one storage node for and not read yet. Eight functions of one process each
/// reading a large object, 8 pieces of 1 MiB at a time, asked one node for 20-26 MB at once; the nodes of then closed a
/// connection whose unread replies passed 16 MiB, mid-read (the sort of `pocket demo`). A node now holds such a
/// connection's requests back instead (<c>FrameServerOptions.ReplyPauseBytes</c>), and this budget keeps what one
/// process asks a node for, and so what the node and the kernel hold for it, within 8 MiB, on any node. Reads wait
/// here, first come first served, until their bytes fit; one larger than the whole budget goes alone. Measured
/// against no budget on pausing nodes: no cost resolved (docs/benchmarks.md, "Large tiered gets under the client's
/// read budget").
/// </summary>
internal sealed class ReadBudget(long capacity)
{
    /// <summary>Half the nodes' default bound: room for what a turn answers beyond it, and for other replies.</summary>
    public const long Default = 8 << 20;

    private readonly Queue<(long Bytes, TaskCompletionSource Granted)> _waiting = new();
    private long _inUse;
    private long _peak;

    /// <summary>The most bytes ever taken at once (tests: the budget holds, and was used).</summary>
    public long Peak
    {
        get
        {
            lock (_waiting)
            {
                return _peak;
            }
        }
    }

    /// <summary>Takes <paramref name="bytes"/> of the budget, waiting for earlier reads to give theirs back.</summary>
    public Task TakeAsync(long bytes, CancellationToken cancellationToken)
    {
        TaskCompletionSource granted;
        lock (_waiting)
        {
            if (_waiting.Count == 0 && (_inUse == 0 || _inUse + bytes <= capacity))
            {
                _inUse += bytes;
                _peak = Math.Max(_peak, _inUse);
                return Task.CompletedTask;
            }

            granted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting.Enqueue((bytes, granted));
        }

        return WaitAsync(bytes, granted, cancellationToken);
    }

    /// <summary>Gives <paramref name="bytes"/> back and lets the reads waiting next in that now fit go.</summary>
    public void Give(long bytes)
    {
        lock (_waiting)
        {
            _inUse -= bytes;
            Grant();
        }
    }

    private async Task WaitAsync(long bytes, TaskCompletionSource granted, CancellationToken cancellationToken)
    {
        try
        {
            await granted.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Granted meanwhile: its bytes go back; otherwise it leaves the queue and nothing was taken.
            lock (_waiting)
            {
                if (granted.Task.IsCompleted)
                {
                    _inUse -= bytes;
                }
                else
                {
                    granted.TrySetCanceled(cancellationToken);
                }

                Grant();
            }

            throw;
        }
    }

    // Under the lock: the queue's head goes while it fits (or alone); cancelled waits are dropped on the way.
    private void Grant()
    {
        while (_waiting.TryPeek(out var next))
        {
            if (next.Granted.Task.IsCanceled)
            {
                _waiting.Dequeue();
                continue;
            }

            if (_inUse != 0 && _inUse + next.Bytes > capacity)
            {
                return;
            }

            _waiting.Dequeue();
            _inUse += next.Bytes;
            _peak = Math.Max(_peak, _inUse);
            next.Granted.TrySetResult();
        }
    }
}
