namespace Pocket.Storage;

/// <summary>
/// Wraps a device and lets at most <see cref="Depth"/> requests run on it at once, admitting waiters in arrival
/// order (a FIFO queue, so no request starves). A deep queue keeps flash busy; a shallow one keeps a disk's head
/// from being pulled between many streams at once.
/// </summary>
/// <remarks>
/// A finishing request hands its slot straight to the oldest waiter and wakes that one thread only; a newcomer
/// never overtakes a waiter, because it runs at once only when nobody is queued.
/// </remarks>
public sealed class QueuedDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly object _lock = new();
    private readonly Queue<Waiter> _waiters = new();
    private int _running;

    // A request waits on its own thread, so one waiter per thread serves every request it makes.
    [ThreadStatic]
    private static Waiter? t_waiter;

    public QueuedDevice(IBlockDevice inner, int depth)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(depth);
        _inner = inner;
        Depth = depth;
    }

    /// <summary>Requests allowed to run at once.</summary>
    public int Depth { get; }

    /// <summary>The wrapped device.</summary>
    public IBlockDevice Inner => _inner;

    /// <summary>Requests waiting for their turn right now.</summary>
    public int Waiting
    {
        get
        {
            lock (_lock)
            {
                return _waiters.Count;
            }
        }
    }

    /// <summary>Test hook: called on the arriving thread once its request has joined the queue.</summary>
    internal Action? Queued { get; set; }

    public string Kind => _inner.Kind;

    public long Capacity => _inner.Capacity;

    public bool IsDirect => false;

    public int Alignment => _inner.Alignment;

    public string Description => $"{_inner.Description}, queue depth {Depth}";

    public Span<byte> GetSpan(long offset, int length) => throw new NotSupportedException("queued devices are not directly addressable");

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        Enter();
        try
        {
            _inner.Write(offset, data);
        }
        finally
        {
            Exit();
        }
    }

    public void Read(long offset, Span<byte> destination)
    {
        Enter();
        try
        {
            _inner.Read(offset, destination);
        }
        finally
        {
            Exit();
        }
    }

    private void Enter()
    {
        var waiter = t_waiter ??= new Waiter();
        lock (_lock)
        {
            if (_running < Depth && _waiters.Count == 0)
            {
                _running++;
                return;
            }

            waiter.Admitted = false;
            _waiters.Enqueue(waiter);
        }

        Queued?.Invoke();
        waiter.WaitForTurn();
    }

    private void Exit()
    {
        Waiter? next;
        lock (_lock)
        {
            // The slot passes to the oldest waiter (the count of running requests stays); with none, it is freed.
            if (!_waiters.TryDequeue(out next))
            {
                _running--;
            }
        }

        next?.Admit();
    }

    /// <summary>Takes a turn like any request: a hole punched on a disk moves its head as a write does.</summary>
    public bool Discard(long offset, long length)
    {
        Enter();
        try
        {
            return _inner.Discard(offset, length);
        }
        finally
        {
            Exit();
        }
    }

    public void Populate(long offset, long length) => _inner.Populate(offset, length);

    public void Dispose() => _inner.Dispose();

    private sealed class Waiter
    {
        private readonly object _gate = new();

        public bool Admitted;

        public void WaitForTurn()
        {
            lock (_gate)
            {
                while (!Admitted)
                {
                    Monitor.Wait(_gate);
                }
            }
        }

        public void Admit()
        {
            lock (_gate)
            {
                Admitted = true;
                Monitor.Pulse(_gate);
            }
        }
    }
}
