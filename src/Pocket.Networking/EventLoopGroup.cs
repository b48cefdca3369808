using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Pocket.Networking;

/// <summary>
/// The threads of one frame server's plain connections: a few event loops sharing one epoll set, and a small pool
/// for handlers that block (device I/O). Each connection is armed one-shot, so exactly one thread owns it from the
/// wake-up until it re-arms it: a loop reads, parses and handles its frames inline (no hop to another thread, which
/// cost 5-15 us per request on two cores with the runtime's async sockets), and any loop takes any ready connection.
/// </summary>
internal sealed unsafe class EventLoopGroup : IDisposable
{
    // Events taken per wake-up. A loop that is preempted (or paused) in the middle of its batch holds the events it has
    // not reached yet while the other loops serve connections that became ready after them: at 1,024 connections on a
    // loaded machine, 24-41 % of the requests waited 8 ms or more inside a batch of 128 that way, 2-4 % with 16. A
    // small batch bounds those hostages at the cost of one epoll_wait per few requests.
    private const int MaxEvents = 16;
    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread[] _loops;
    private readonly int _ioThreads;
    private readonly string _name;
    private readonly ConcurrentQueue<LoopConnection> _blocking = new();
    private readonly SemaphoreSlim _blockingReady = new(0);
    private readonly Lock _poolLock = new();
    private readonly List<Thread> _pool = [];
    private volatile bool _stopping;

    public EventLoopGroup(string name, int loops, int ioThreads)
    {
        _name = name;
        _ioThreads = ioThreads;
        _epoll = Linux.CreateEpoll();
        _wake = Linux.CreateEventFd();

        // Level-triggered and never re-armed: once signalled at stop, every loop wakes and sees it.
        Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, _wake, Linux.EpollIn, 0);
        _loops = new Thread[loops];
        for (var i = 0; i < loops; i++)
        {
            _loops[i] = new Thread(Loop) { IsBackground = true, Name = $"{name} loop {i}" };
            _loops[i].Start();
        }
    }

    public bool Stopping => _stopping;

    /// <summary>Starts watching a new connection (it is read as soon as data arrives, on whichever loop wakes).</summary>
    public void Add(LoopConnection connection)
    {
        connection.Handle = GCHandle.Alloc(connection);
        if (!Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, connection.Fd, Linux.EpollIn | Linux.EpollRdHup | Linux.EpollOneShot, (ulong)GCHandle.ToIntPtr(connection.Handle)))
        {
            connection.Handle.Free();
            throw new IOException($"epoll_ctl add failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// Hands the connection back to the loops, waiting for input (and for room to write, when replies wait). False
    /// when epoll refused: no loop would ever run the connection again, so its owner closes it.
    /// </summary>
    public bool Rearm(LoopConnection connection, bool wantWrite)
    {
        var events = Linux.EpollIn | Linux.EpollRdHup | Linux.EpollOneShot | (wantWrite ? Linux.EpollOut : 0);
        return Linux.EpollCtl(_epoll, Linux.EpollCtlMod, connection.Fd, events, (ulong)GCHandle.ToIntPtr(connection.Handle));
    }

    public void Remove(LoopConnection connection)
    {
        Linux.EpollCtl(_epoll, Linux.EpollCtlDel, connection.Fd, 0, 0);
        if (connection.Handle.IsAllocated)
        {
            connection.Handle.Free();
        }
    }

    /// <summary>Runs the connection's next frame on the I/O pool (its handler blocks); the connection stays unarmed meanwhile.</summary>
    public void Offload(LoopConnection connection)
    {
        if (_pool.Count < _ioThreads)
        {
            lock (_poolLock)
            {
                if (_pool.Count < _ioThreads && !_stopping)
                {
                    // Started on first use and one more with each offload up to the bound, busy or not: a spare
                    // thread waits on the semaphore. The count is read first without the lock only to skip it once
                    // the pool is full; it is checked again under the lock.
                    var thread = new Thread(PoolLoop) { IsBackground = true, Name = $"{_name} io {_pool.Count}" };
                    _pool.Add(thread);
                    thread.Start();
                }
            }
        }

        _blocking.Enqueue(connection);
        _blockingReady.Release();
    }

    private void Loop()
    {
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * Linux.EventSize));
        try
        {
            // Connections that used up their turn with whole frames still buffered (see LoopConnection.FramesPerTurn):
            // epoll would not signal them again, so this loop owns them, unarmed, and gives each another turn after
            // the connections that became ready meanwhile (round robin).
            var again = new Queue<LoopConnection>();
            while (!_stopping)
            {
                var n = Linux.EpollWait(_epoll, events, MaxEvents, again.Count > 0 ? 0 : -1);
                var owed = again.Count;
                for (var i = 0; i < n && !_stopping; i++)
                {
                    var data = Linux.EventData(events, i);
                    if (data == 0)
                    {
                        continue;
                    }

                    if (GCHandle.FromIntPtr((nint)data).Target is LoopConnection connection && connection.Run(onPool: false))
                    {
                        again.Enqueue(connection);
                    }
                }

                for (var i = 0; i < owed && !_stopping; i++)
                {
                    var connection = again.Dequeue();
                    if (connection.Run(onPool: false))
                    {
                        again.Enqueue(connection);
                    }
                }
            }
        }
        finally
        {
            NativeMemory.Free(events);
        }
    }

    private void PoolLoop()
    {
        while (true)
        {
            _blockingReady.Wait();
            if (_stopping)
            {
                return;
            }

            if (_blocking.TryDequeue(out var connection))
            {
                connection.Run(onPool: true);
            }
        }
    }

    /// <summary>Stops the loops and the pool, waiting for each to leave what it was running.</summary>
    public void Dispose()
    {
        _stopping = true;
        Linux.Signal(_wake);
        Thread[] pool;
        lock (_poolLock)
        {
            pool = [.. _pool];
        }

        _blockingReady.Release(pool.Length + 1);
        var deadline = Environment.TickCount64 + 5_000;
        foreach (var thread in _loops.Concat(pool))
        {
            if (thread != Thread.CurrentThread)
            {
                thread.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64)));
            }
        }

        Linux.Close(_wake);
        Linux.Close(_epoll);
    }
}
