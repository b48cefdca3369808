using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Pocket.Networking;

/// <summary>
/// The threads of one frame server's connections (plain, and TLS through a <see cref="TlsTransport"/>): a few event loops sharing one epoll set, and a small pool
/// for handlers that block (device I/O). A loop reads, parses and handles a connection's frames inline (no hop to
/// another thread, which cost 5-15 us per request on two cores with the runtime's async sockets), and any loop takes
/// any ready connection. Connections are registered edge-triggered once and never re-armed (a one-shot registration
/// cost an epoll_ctl per request); exactly one thread owns a connection at a time through its own flag (see
/// <see cref="LoopConnection.OnReady"/>): an event for a connection that another thread owns is remembered by the
/// connection, and its owner runs it again before letting go.
/// </summary>
internal sealed unsafe class EventLoopGroup : IDisposable
{
    // Events taken per wake-up. A loop that is preempted (or paused) in the middle of its batch holds the events it has
    // not reached yet while the other loops serve connections that became ready after them: at 1,024 connections on a
    // loaded machine, 24-41 % of the requests waited 8 ms or more inside a batch of 128 that way, 2-4 % with 16. A
    // small batch bounds those hostages at the cost of one epoll_wait per few requests. Swept at 64 and 256
    // connections of 1 KiB gets, no batch from 4 to 256 used less server CPU per request than 16 in every pass
    // (docs/benchmarks.md, "The metadata server's turn per small get").
    private const int MaxEvents = 16;

    // A loop that keeps finding work steps aside after every fourth batch of ready connections (sched_yield): a thread
    // waiting for a core (a client on the same machine, a handler of this process) runs first; when none waits, the
    // call returns at once. Without it, two busy loops held both cores for whole scheduler slices, and closed-loop
    // clients on the same two cores waited behind them: at 64 connections Pocket's p99 was 1.11-1.44x Redis's at
    // 1.13-1.26x its ops/s. Stepping aside after every batch took the p99 to 0.53-0.56x but the ops/s to 0.92-0.97x
    // (a switch per batch); after every fourth, p99 0.52-0.65x at 1.15-1.25x its ops/s; every sixteenth, 0.77-0.88x.
    // It costs up to 14 % more server CPU per get at 256-4,096 connections (docs/benchmarks.md, "Event loops that
    // step aside").
    private const int BatchesPerYield = 4;

    // Event data of the two eventfds and the listener; a connection's is its id (from 1 up).
    private const ulong WakeData = 0;
    private const ulong HandBackData = ulong.MaxValue;
    private const ulong ListenerData = ulong.MaxValue - 1;
    private const uint ListenerEvents = Linux.EpollIn | Linux.EpollOneShot;
    private readonly int _epoll;
    private readonly int _wake;
    private readonly int _handBack;
    private readonly Thread[] _loops;
    private readonly Batch?[] _batches;
    private readonly int _ioThreads;
    private readonly string _name;
    private readonly ConcurrentDictionary<long, LoopConnection> _connections = new();
    private readonly ConcurrentQueue<LoopConnection> _handedBack = new();
    private readonly ConcurrentQueue<LoopConnection> _blocking = new();
    private readonly SemaphoreSlim _blockingReady = new(0);
    private readonly Lock _poolLock = new();
    private readonly List<Thread> _pool = [];
    private readonly TimeSpan _stopTimeout;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private LoopAcceptor? _acceptor;
    private long _firstReadsAtAccept;
    private volatile bool _stopping;

    // The loops and pool threads that have not left yet, plus one held by Dispose: the last one out closes the epoll set
    // and the eventfds (see Leave).
    private int _threads;

    public EventLoopGroup(string name, int loops, int ioThreads, TimeSpan stopTimeout)
    {
        _name = name;
        _ioThreads = ioThreads;
        _stopTimeout = stopTimeout;
        _epoll = Linux.CreateEpoll();
        _wake = Linux.CreateEventFd();
        _handBack = Linux.CreateEventFd();

        // Level-triggered and never re-armed: once signalled at stop, every loop wakes and sees it.
        Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, _wake, Linux.EpollIn, WakeData);

        // Edge-triggered: each signal wakes one loop, which takes every connection queued before it (never read: the
        // counter would take centuries to fill).
        Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, _handBack, Linux.EpollIn | Linux.EpollEt, HandBackData);
        _loops = new Thread[loops];
        _batches = new Batch?[loops];
        _threads = loops + 1;
        for (var i = 0; i < loops; i++)
        {
            _loops[i] = new Thread(Loop) { IsBackground = true, Name = $"{name} loop {i}" };
            _loops[i].Start(i);
        }
    }

    public bool Stopping => _stopping;

    /// <summary>Completes once the group is stopped and every loop and pool thread has left: no handler runs any more.</summary>
    public Task Ended => _ended.Task;

    /// <summary>
    /// New connections whose first read found input in the turn run by the loop that accepted them (tests: the first
    /// request needs no other wake-up).
    /// </summary>
    public long FirstReadsAtAccept => Interlocked.Read(ref _firstReadsAtAccept);

    internal void CountFirstReadAtAccept() => Interlocked.Increment(ref _firstReadsAtAccept);

    /// <summary>Adds the server's listener, one-shot: the loop that takes its event accepts (see <see cref="LoopAcceptor"/>).</summary>
    public bool Listen(LoopAcceptor acceptor, Socket listener)
    {
        _acceptor = acceptor;
        return Linux.EpollArm(_epoll, listener.SafeHandle, Linux.EpollCtlAdd, ListenerEvents, ListenerData);
    }

    /// <summary>Arms the listener again once its batch is taken (level-triggered: a queue left behind raises the next event at once).</summary>
    public void ArmListener(Socket listener) =>
        Linux.EpollArm(_epoll, listener.SafeHandle, Linux.EpollCtlMod, ListenerEvents, ListenerData);

    /// <summary>
    /// Starts watching a new connection (it is read as soon as data arrives, on whichever loop wakes), by its owner at
    /// the end of its first turn (see <see cref="LoopConnection.RunFirst"/>); with <paramref name="writes"/> also for
    /// room to write. False, with <paramref name="errno"/>, when epoll refused.
    /// </summary>
    public bool Add(LoopConnection connection, bool writes, out int errno)
    {
        _connections[connection.Id] = connection;
        var events = Linux.EpollIn | Linux.EpollRdHup | Linux.EpollEt | (writes ? Linux.EpollOut : 0);
        if (!Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, connection.Fd, events, (ulong)connection.Id))
        {
            errno = Marshal.GetLastPInvokeError();
            _connections.TryRemove(connection.Id, out _);
            return false;
        }

        errno = 0;
        return true;
    }

    /// <summary>True when <paramref name="fd"/> is in the epoll set now, as /proc says (tests).</summary>
    internal bool Watches(int fd)
    {
        foreach (var line in File.ReadLines($"/proc/self/fdinfo/{_epoll}"))
        {
            // "tfd:     12 events: ..."
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > 1 && fields[0] == "tfd:" && fields[1] == fd.ToString(System.Globalization.CultureInfo.InvariantCulture))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Adds interest in room to write, once, for a connection whose replies wait for its peer to read (edge-triggered,
    /// it costs nothing while the socket has room). False when epoll refused: the connection would never be written
    /// again, so its owner closes it.
    /// </summary>
    public bool WatchWrites(LoopConnection connection) =>
        Linux.EpollCtl(_epoll, Linux.EpollCtlMod, connection.Fd, Linux.EpollIn | Linux.EpollRdHup | Linux.EpollOut | Linux.EpollEt, (ulong)connection.Id);

    /// <summary>
    /// Stops watching the connection (<paramref name="registered"/>: it was added to epoll; one closed in its first turn
    /// never was). An event already taken by another loop may still name it: that loop finds it gone, or finds it owned
    /// (a closed connection stays owned) and leaves it.
    /// </summary>
    public void Remove(LoopConnection connection, bool registered)
    {
        _connections.TryRemove(connection.Id, out _);
        if (registered)
        {
            Linux.EpollCtl(_epoll, Linux.EpollCtlDel, connection.Fd, 0, 0);
        }
    }

    /// <summary>
    /// Gives an owned connection with input left (a pool thread used up its reads) to a loop, which runs it as one it
    /// owes a turn: no epoll event would come for input that has already arrived.
    /// </summary>
    public void HandBack(LoopConnection connection)
    {
        _handedBack.Enqueue(connection);
        Linux.Signal(_handBack);
        CloseQueuedIfStopping(_handedBack);
    }

    /// <summary>Runs the connection's next frame on the I/O pool (its handler blocks); the pool thread owns the connection meanwhile.</summary>
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
                    Interlocked.Increment(ref _threads);
                    thread.Start();
                }
            }
        }

        _blocking.Enqueue(connection);
        _blockingReady.Release();
        CloseQueuedIfStopping(_blocking);
    }

    /// <summary>
    /// After a connection was queued: once the group stops nobody takes from the queues any more, so whoever queues
    /// closes what is left there (a dequeue hands a connection to one thread only, so each is closed once, by its owner).
    /// Stop sets the flag before it empties the queues itself, so a connection queued after that is seen here.
    /// </summary>
    private void CloseQueuedIfStopping(ConcurrentQueue<LoopConnection> queue)
    {
        if (!_stopping)
        {
            return;
        }

        while (queue.TryDequeue(out var connection))
        {
            connection.Close(null);
        }
    }

    private void Loop(object? state)
    {
        var index = (int)state!;
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * Linux.EventSize));

        // Allocated by its loop's thread, so no other loop's batch shares its cache lines.
        var batch = new Batch();
        Volatile.Write(ref _batches[index], batch);
        try
        {
            // Connections that used up their turn with input left (see LoopConnection.FramesPerTurn), or handed back by
            // the pool: no epoll event would come for input already read or already there, so this loop owns them and
            // gives each another turn after the connections that became ready meanwhile (round robin).
            var again = new Queue<LoopConnection>();
            var accepted = new List<LoopConnection>(LoopAcceptor.AcceptsPerWake);
            var batches = 0;
            while (!_stopping)
            {
                var n = Linux.EpollWait(_epoll, events, MaxEvents, again.Count > 0 ? 0 : -1);
                var owed = again.Count;
                var ready = 0;
                var accept = false;
                for (var i = 0; i < n; i++)
                {
                    var data = Linux.EventData(events, i);
                    if (data == WakeData)
                    {
                        continue;
                    }

                    if (data == HandBackData)
                    {
                        while (_handedBack.TryDequeue(out var handed))
                        {
                            again.Enqueue(handed);
                        }

                        continue;
                    }

                    if (data == ListenerData)
                    {
                        accept = true;
                        continue;
                    }

                    if (_connections.TryGetValue((long)data, out var connection))
                    {
                        if (Linux.HungUp(events, i))
                        {
                            connection.NoteHangUp();
                        }

                        // Released after the hang-up note: a loop that claims the slot sees both.
                        Volatile.Write(ref batch.Slots[ready++], connection);
                    }
                }

                // Published before any of it runs: a loop that finishes its own work first takes what this one has not
                // started (see Steal).
                if (ready > 0)
                {
                    batch.Open = true;
                }

                if (accept && !_stopping)
                {
                    Accept(accepted, again);
                }

                for (var i = 0; i < ready; i++)
                {
                    var connection = Interlocked.Exchange(ref batch.Slots[i], null);
                    if (connection is not null && !_stopping && connection.OnReady())
                    {
                        again.Enqueue(connection);
                    }
                }

                batch.Open = false;
                for (var i = 0; i < owed && !_stopping; i++)
                {
                    var connection = again.Dequeue();
                    if (connection.Run(onPool: false))
                    {
                        again.Enqueue(connection);
                    }
                }

                Steal(index, again);
                if (ready > 0 && ++batches == BatchesPerYield)
                {
                    batches = 0;
                    Thread.Yield();
                }
            }

            // The connections this loop still owes a turn are its own: closed here, where no other thread touches them
            // (a loop that comes back from a handler held past Stop's deadline closes its own too).
            while (again.TryDequeue(out var owed))
            {
                owed.Close(null);
            }
        }
        finally
        {
            NativeMemory.Free(events);
            Leave();
        }
    }

    /// <summary>
    /// Runs the connections another loop took from epoll and has not started yet: a loop held in the middle of its batch
    /// (preempted, or in a slow handler) would otherwise keep them waiting while this loop serves connections that became
    /// ready after them. Each slot is claimed once, by whoever empties it first. (It did not lower the p99 at 64
    /// connections, which it was written for: docs/benchmarks.md, "A held loop's batch".)
    /// </summary>
    private void Steal(int index, Queue<LoopConnection> again)
    {
        for (var other = 0; other < _batches.Length && !_stopping; other++)
        {
            var batch = other == index ? null : Volatile.Read(ref _batches[other]);
            if (batch is null || !batch.Open)
            {
                continue;
            }

            for (var i = 0; i < MaxEvents; i++)
            {
                if (Volatile.Read(ref batch.Slots[i]) is not null
                    && Interlocked.Exchange(ref batch.Slots[i], null) is { } connection
                    && connection.OnReady())
                {
                    again.Enqueue(connection);
                }
            }
        }
    }

    /// <summary>
    /// Takes a batch of connects and runs each new connection's first turn here and now, without waiting for an event:
    /// its first request has usually arrived with (or before) the connect.
    /// </summary>
    private void Accept(List<LoopConnection> accepted, Queue<LoopConnection> again)
    {
        _acceptor!.Accept(accepted);
        foreach (var connection in accepted)
        {
            if (_stopping)
            {
                // Owned by this loop since its accept and never run: nobody else would close it.
                connection.Close(null);
            }
            else if (connection.RunFirst())
            {
                again.Enqueue(connection);
            }
        }

        accepted.Clear();
    }

    private void PoolLoop()
    {
        try
        {
            while (true)
            {
                _blockingReady.Wait();
                if (_stopping)
                {
                    return;
                }

                if (_blocking.TryDequeue(out var connection) && connection.Run(onPool: true))
                {
                    HandBack(connection);
                }
            }
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>
    /// Stops the loops and the pool and waits, up to the server's stop timeout, for each to leave what it was running;
    /// then closes the connections queued for a turn that no thread will take. True when every thread left: nobody
    /// owns a connection any more. False when a handler is still running past the deadline: its thread owns its
    /// connections (their buffers too) and closes them when it comes back (see <see cref="LoopConnection.Run"/>).
    /// </summary>
    public bool Stop()
    {
        _stopping = true;
        Linux.Signal(_wake);
        Thread[] pool;
        lock (_poolLock)
        {
            pool = [.. _pool];
        }

        _blockingReady.Release(pool.Length + 1);
        var infinite = _stopTimeout == Timeout.InfiniteTimeSpan;
        var deadline = Environment.TickCount64 + (long)_stopTimeout.TotalMilliseconds;
        var ended = true;
        foreach (var thread in _loops.Concat(pool))
        {
            if (thread == Thread.CurrentThread)
            {
                // Stopped from a handler: this thread still owns the connection it is serving.
                ended = false;
            }
            else
            {
                ended &= infinite ? thread.Join(Timeout.Infinite) : thread.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64)));
            }
        }

        CloseQueuedIfStopping(_handedBack);
        CloseQueuedIfStopping(_blocking);
        return ended;
    }

    /// <summary>
    /// Lets go of the group (after <see cref="Stop"/>, once the server closed the connections nobody owns). The epoll set
    /// and the eventfds are closed by the last thread out: a loop held past the deadline still takes its connections
    /// out of the set when it closes them, and a descriptor closed under it could by then carry another file's number.
    /// </summary>
    public void Dispose() => Leave();

    private void Leave()
    {
        if (Interlocked.Decrement(ref _threads) != 0)
        {
            return;
        }

        Linux.Close(_wake);
        Linux.Close(_handBack);
        Linux.Close(_epoll);
        _ended.TrySetResult();
    }

    /// <summary>The connections of a loop's last epoll batch that no thread has started yet (see <see cref="Steal"/>).</summary>
    private sealed class Batch
    {
        public readonly LoopConnection?[] Slots = new LoopConnection?[MaxEvents];

        /// <summary>Set while the owner works through <see cref="Slots"/>: a hint for other loops, read before the slots.</summary>
        public volatile bool Open;
    }
}
