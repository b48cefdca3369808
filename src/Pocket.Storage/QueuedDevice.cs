namespace Pocket.Storage;

/// <summary>
/// Wraps a device and lets at most <see cref="Depth"/> requests run on it at once, admitting waiters in arrival
/// order (a ticket queue, so no request starves). A deep queue keeps flash busy; a shallow one keeps a disk's head
/// from being pulled between many streams at once.
/// </summary>
public sealed class QueuedDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly object _lock = new();
    private long _nextTicket;
    private long _exited;

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
                return (int)Math.Max(0, _nextTicket - _exited - Depth);
            }
        }
    }

    public string Kind => _inner.Kind;

    public long Capacity => _inner.Capacity;

    public bool IsDirect => false;

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
        lock (_lock)
        {
            // Ticket t runs once fewer than Depth earlier tickets are still running: admission in ticket order.
            var ticket = _nextTicket++;
            while (ticket >= _exited + Depth)
            {
                Monitor.Wait(_lock);
            }
        }
    }

    private void Exit()
    {
        lock (_lock)
        {
            _exited++;
            Monitor.PulseAll(_lock);
        }
    }

    public void Dispose() => _inner.Dispose();
}
