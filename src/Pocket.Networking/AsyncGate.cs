namespace Pocket.Networking;

/// <summary>
/// Admits up to a fixed number of holders; further callers wait asynchronously. Entering and leaving without
/// contention is one interlocked operation each on the gate's own fields: a <see cref="SemaphoreSlim"/> took its lock
/// object's monitor twice per request, two more objects touched per request on each of thousands of connections.
/// The semaphore that wakes waiters is made only when someone has to wait. Not fair: a caller arriving when a slot is
/// free takes it even while others wait.
/// </summary>
internal sealed class AsyncGate(int capacity)
{
    private int _free = capacity;
    private int _waiters;
    private SemaphoreSlim? _wake;

    /// <summary>Takes a slot if one is free; never waits.</summary>
    public bool TryEnter()
    {
        var free = Volatile.Read(ref _free);
        while (free > 0)
        {
            var seen = Interlocked.CompareExchange(ref _free, free - 1, free);
            if (seen == free)
            {
                return true;
            }

            free = seen;
        }

        return false;
    }

    /// <summary>Takes a slot, waiting for one; a cancelled token ends the wait with <see cref="OperationCanceledException"/>.</summary>
    public ValueTask EnterAsync(CancellationToken cancellationToken) =>
        TryEnter() ? ValueTask.CompletedTask : WaitAsync(cancellationToken);

    /// <summary>Gives a slot back.</summary>
    public void Exit()
    {
        Interlocked.Increment(ref _free);

        // A waiter counts itself before it looks for a free slot, and this looks for waiters after freeing one: either
        // the waiter sees the slot or this sees the waiter, so no wake-up is lost.
        var waiters = Volatile.Read(ref _waiters);
        if (waiters > 0)
        {
            var wake = Wake();
            if (wake.CurrentCount < waiters)
            {
                wake.Release();
            }
        }
    }

    private SemaphoreSlim Wake()
    {
        var wake = Volatile.Read(ref _wake);
        if (wake is null)
        {
            var made = new SemaphoreSlim(0);
            wake = Interlocked.CompareExchange(ref _wake, made, null) ?? made;
            if (wake != made)
            {
                made.Dispose();
            }
        }

        return wake;
    }

    private async ValueTask WaitAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waiters);
        try
        {
            // A wake-up is a hint to look again: another caller may have taken the slot first.
            while (!TryEnter())
            {
                await Wake().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waiters);
        }
    }
}
