using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Pocket.Networking;

/// <summary>A plain client connection the client loops read: called on a loop when its socket has input.</summary>
internal interface IClientLoopConnection
{
    /// <summary>
    /// Reads what has arrived without waiting (until the socket is empty: the loops are edge-triggered, and no event
    /// comes again for input left in it) and completes its callers inline. Called for every event, possibly on two
    /// loops at once: the connection lets one of them read and makes sure input signalled meanwhile is read before that
    /// one lets go. Input it leaves unread on purpose (a read budget) it asks to be run for with <see cref="ClientLoops.Kick"/>.
    /// </summary>
    /// <param name="hungUp">The event says the peer closed: read on past a short read, to the end of the stream (no
    /// event comes for it again when it arrived with the last data).</param>
    void OnReadable(bool hungUp);

    /// <summary>
    /// Called on the loops' timer every 100 ms for every connection while the timer runs: a cheap look for late requests
    /// or an overrunning callback, which hands any real work to the thread pool (it must not block: the other
    /// connections wait for it).
    /// </summary>
    void OnTick();

    /// <summary>
    /// True while the connection gives the timer something to watch: a request in flight (it may be late), a reply's
    /// callback running or a check the tick queued. <see cref="ClientLoops"/> stops its timer only after it found every
    /// connection quiet twice, the second time (<paramref name="exact"/>) after it marked itself stopped: then a
    /// connection that enlists requests under a lock takes that lock (see <see cref="ClientLoops.Watch"/>).
    /// </summary>
    bool HasWork(bool exact);
}

/// <summary>
/// The threads that read replies for every plain client connection in the process (Pocket's
/// <see cref="FrameConnection"/>, and the load generator's raw RESP connections, so that both sides of a comparison
/// are driven the same way): a few event loops over one
/// epoll set, as on the servers, instead of a reader thread per connection (a function talking to many nodes, the
/// gateway and a fan-in benchmark each held a thread per connection). Each connection is registered edge-triggered
/// once and never re-armed (a one-shot registration cost an epoll_ctl per reply); the connection itself lets one loop
/// at a time read it (see <see cref="IClientLoopConnection.OnReadable"/>), which completes its callers inline (no
/// hop to another thread). A caller's continuation that blocks a loop (sync-over-async) must not stall the other
/// connections: when every loop has been busy for longer than <see cref="Stuck"/>, another loop is started, and it
/// leaves again once the others are free.
/// <para>
/// The watchdog's timer runs only while there is something to watch (a request in flight, a loop inside a callback):
/// an idle process (a storage node between heartbeats, a function waiting for its next stage) was woken ten times a
/// second for nothing, and each tick woke two pool workers that spun before they slept again. A connection calls <see
/// cref="Watch"/> after it enlisted a request (one read of a field while the timer runs); the tick that finds nothing
/// to watch stops the timer.
/// </para>
/// <para>
/// The process's loops (<see cref="Shared"/>) live as long as it does. Others (tests make their own on a fake clock) are
/// disposed: their threads end and their epoll set and eventfds are closed, by the last loop to leave.
/// </para>
/// </summary>
internal sealed unsafe class ClientLoops : IDisposable
{
    private const int MaxEvents = 64;

    /// <summary>Event data of the eventfd that <see cref="Kick"/> signals (connection ids start at 1).</summary>
    private const ulong KickData = 0;

    /// <summary>Event data of the eventfd that <see cref="Dispose"/> signals (ids would take centuries to reach it).</summary>
    private const ulong StopData = ulong.MaxValue;

    /// <summary>Loops started beyond the base number, at most, while others are blocked.</summary>
    private const int MaxExtraLoops = 64;

    private static readonly TimeSpan Stuck = TimeSpan.FromMilliseconds(100);
    private static readonly Lazy<ClientLoops> SharedLoops = new(() => new ClientLoops(Math.Clamp(Environment.ProcessorCount, 1, 8), TimeProvider.System));

    private readonly int _epoll;
    private readonly int _kick;
    private readonly int _stop;
    private readonly ConcurrentQueue<ulong> _kicked = new();
    private readonly int _baseLoops;
    private readonly ConcurrentDictionary<ulong, IClientLoopConnection> _connections = new();
    private readonly Lock _loopsLock = new();
    private readonly List<LoopState> _loops = [];
    private readonly ITimer _watchdog;
    private readonly TimeProvider _time;
    private readonly long _origin;
    private readonly Lock _watchLock = new();
    private long _nextId;
    private int _ticking;

    // Set (under _loopsLock) by Dispose; no loop starts after it. _running counts the loops whose threads run: the last
    // to leave after Dispose closes the descriptors (a loop may still be inside epoll_wait on them until it leaves).
    private bool _disposed;
    private int _running;

    // 1 while the watchdog's timer runs; changed (with the timer) only under _watchLock.
    private int _watching;

    /// <summary>
    /// Starts <paramref name="loops"/> loops whose watchdog runs on <paramref name="time"/>'s timer and reads its clock
    /// (<see cref="Now"/>); tests pass a fake one, the process shares <see cref="Shared"/> on the system's.
    /// </summary>
    internal ClientLoops(int loops, TimeProvider time)
    {
        _time = time;
        _origin = time.GetTimestamp();
        _epoll = Linux.CreateEpoll();

        // Edge-triggered: each signal wakes one loop, which runs every connection kicked before it (never read: the
        // counter would take centuries to fill).
        _kick = Linux.CreateEventFd();
        Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, _kick, Linux.EpollIn | Linux.EpollEt, KickData);

        // Level-triggered and never read: once signalled, every loop's every wait returns it, so each of them leaves.
        _stop = Linux.CreateEventFd();
        Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, _stop, Linux.EpollIn, StopData);
        _baseLoops = loops;
        for (var i = 0; i < loops; i++)
        {
            StartLoop(extra: false);
        }

        // Started by the first request (Watch), not now: a process whose connections are idle has nothing to watch.
        _watchdog = time.CreateTimer(_ => Tick(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// The loops' clock in milliseconds, for the watchdog's bounds (a request's start, a callback's): on the system's
    /// time <see cref="Environment.TickCount64"/> (a plain memory read; see FrameConnection's Elapsed), on any other the
    /// provider's time since the loops started, offset so that it is never 0 (0 marks "not started" in those fields).
    /// </summary>
    public long Now => ReferenceEquals(_time, TimeProvider.System)
        ? Environment.TickCount64
        : (long)_time.GetElapsedTime(_origin).TotalMilliseconds + 1_000_000;

    /// <summary>True while the watchdog's timer runs.</summary>
    internal bool IsWatching => Volatile.Read(ref _watching) != 0;

    /// <summary>
    /// Starts the watchdog's timer unless it runs; called by a connection after it put a request in its table (with a
    /// full fence: an interlocked operation or a lock the connection's <see cref="IClientLoopConnection.HasWork"/>
    /// takes too), so either this sees the timer stopped, or the tick that stops it sees the request.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Watch()
    {
        if (Volatile.Read(ref _watching) == 0)
        {
            StartWatching();
        }
    }

    private void StartWatching()
    {
        lock (_watchLock)
        {
            if (_watching == 0 && !_disposed)
            {
                Volatile.Write(ref _watching, 1);
                _watchdog.Change(Stuck, Stuck);
            }
        }
    }

    /// <summary>The loops of this process, started with the first plain connection.</summary>
    public static ClientLoops Shared => SharedLoops.Value;

    /// <summary>An id for a connection, taken before <see cref="Add"/>: its first event may arrive before Add returns.</summary>
    public ulong NewId() => (ulong)Interlocked.Increment(ref _nextId);

    /// <summary>Starts watching a connection under its id (for <see cref="Kick"/> and <see cref="Remove"/>).</summary>
    public void Add(ulong id, IClientLoopConnection connection, nint fd)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
        _connections[id] = connection;
        if (!Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, (int)fd, Linux.EpollIn | Linux.EpollRdHup | Linux.EpollEt, id))
        {
            _connections.TryRemove(id, out _);
            throw new IOException($"epoll_ctl add failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// Has a loop run the connection soon although no input may arrive: it left input unread on purpose (replies
    /// already in its own buffer, or a read budget used up), which epoll would never report again.
    /// </summary>
    public void Kick(ulong id)
    {
        if (Volatile.Read(ref _disposed))
        {
            return;
        }

        _kicked.Enqueue(id);
        Linux.Signal(_kick);
    }

    /// <summary>Stops watching a connection (before its socket is closed).</summary>
    public void Remove(ulong id, nint fd)
    {
        _connections.TryRemove(id, out _);
        if (!Volatile.Read(ref _disposed))
        {
            Linux.EpollCtl(_epoll, Linux.EpollCtlDel, (int)fd, 0, 0);
        }
    }

    /// <summary>The threads of the loops running now (tests).</summary>
    internal IReadOnlyList<Thread> Threads
    {
        get
        {
            lock (_loopsLock)
            {
                return [.. _loops.Select(l => l.Thread!)];
            }
        }
    }

    /// <summary>The loops' epoll set (tests: it is closed once they are disposed).</summary>
    internal int EpollDescriptor => _epoll;

    /// <summary>
    /// Stops the loops and waits for their threads to end (not for the caller's own, when a loop disposes them: it ends
    /// when its callback returns); the last to leave closes the epoll set and the eventfds. Connections still on them
    /// are read no more: their owners dispose them first. The process's <see cref="Shared"/> loops are never disposed.
    /// </summary>
    public void Dispose()
    {
        if (SharedLoops.IsValueCreated && ReferenceEquals(SharedLoops.Value, this))
        {
            throw new InvalidOperationException("the process's shared client loops live as long as the process");
        }

        List<Thread> threads;
        lock (_loopsLock)
        {
            if (_disposed)
            {
                return;
            }

            Volatile.Write(ref _disposed, true);
            threads = [.. _loops.Select(l => l.Thread!)];
        }

        lock (_watchLock)
        {
            _watchdog.Dispose();
        }

        Linux.Signal(_stop);
        foreach (var thread in threads)
        {
            if (thread != Thread.CurrentThread)
            {
                thread.Join();
            }
        }
    }

    private void StartLoop(bool extra)
    {
        var state = new LoopState(extra);
        lock (_loopsLock)
        {
            if (_disposed)
            {
                return;
            }

            _loops.Add(state);
            _running++;

            // Started under the lock: Dispose joins every thread it finds in the list. Without the starter's execution
            // context (UnsafeStart): the loops are made by whichever caller connects first, and a thread started
            // plainly keeps that caller's async-locals (a web request's Activity, say) for the life of the process and
            // runs every other caller's completions under them.
            state.Thread = new Thread(() => Loop(state)) { IsBackground = true, Name = $"pocket client loop {_loops.Count - 1}" };
            state.Thread.UnsafeStart();
        }
    }

    /// <summary>A loop's thread leaves: after <see cref="Dispose"/>, the last one closes the descriptors.</summary>
    private void Leave()
    {
        lock (_loopsLock)
        {
            if (--_running > 0 || !_disposed)
            {
                return;
            }
        }

        Linux.Close(_stop);
        Linux.Close(_kick);
        Linux.Close(_epoll);
    }

    private void Loop(LoopState state)
    {
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * Linux.EventSize));
        try
        {
            while (true)
            {
                // A loop started while the others were blocked waits a little for work, and leaves once they are free.
                var n = Linux.EpollWait(_epoll, events, MaxEvents, state.Extra ? 1000 : -1);
                for (var i = 0; i < n; i++)
                {
                    var data = Linux.EventData(events, i);
                    if (data == StopData)
                    {
                        lock (_loopsLock)
                        {
                            _loops.Remove(state);
                        }

                        return;
                    }

                    if (data == KickData)
                    {
                        // Only those queued now: a connection that kicks itself again waits for the next wake-up.
                        for (var k = _kicked.Count; k > 0 && _kicked.TryDequeue(out var kicked); k--)
                        {
                            Run(state, kicked, hungUp: false);
                        }
                    }
                    else
                    {
                        Run(state, data, Linux.HungUp(events, i));
                    }
                }

                if (state.Extra && TryRetire(state))
                {
                    return;
                }
            }
        }
        finally
        {
            NativeMemory.Free(events);
            Leave();
        }
    }

    private void Run(LoopState state, ulong id, bool hungUp)
    {
        if (_connections.TryGetValue(id, out var connection))
        {
            Volatile.Write(ref state.BusySince, Now);
            connection.OnReadable(hungUp);
            Volatile.Write(ref state.BusySince, 0);
        }
    }

    private static bool IsStuck(LoopState state, long now)
    {
        var since = Volatile.Read(ref state.BusySince);
        return since != 0 && now - since >= (long)Stuck.TotalMilliseconds;
    }

    private bool TryRetire(LoopState state)
    {
        var now = Now;
        lock (_loopsLock)
        {
            if (_loops.Count(l => l != state && !IsStuck(l, now)) < _baseLoops)
            {
                return false;
            }

            _loops.Remove(state);
            return true;
        }
    }

    /// <summary>
    /// One timer for the loops and every connection they read (a timer per connection cost a thread-pool callback per
    /// connection ten times a second: 100,000 a second at 10,000 connections, for nothing but looking).
    /// </summary>
    private void Tick()
    {
        // A tick that overran its period (a loaded machine) is not run twice at once.
        if (Interlocked.Exchange(ref _ticking, 1) != 0)
        {
            return;
        }

        try
        {
            AddLoopIfAllStuck();

            // Enumerating the dictionary itself takes no lock and copies nothing (Values would copy all of them).
            var work = false;
            foreach (var pair in _connections)
            {
                pair.Value.OnTick();
                work = work || pair.Value.HasWork(exact: false);
            }

            if (!work && !AnyLoopBusy())
            {
                StopWatchingIfIdle();
            }
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    /// <summary>
    /// Stops the timer when nothing is left to watch. The mark goes first (with a full fence), then every connection
    /// and loop is looked at again: a request enlisted before the mark is seen here, one enlisted after it finds the
    /// timer stopped and starts it (<see cref="Watch"/>). Connections before loops: a loop that takes a reply's request
    /// out of its table has marked itself busy before (<see cref="Run"/>).
    /// </summary>
    private void StopWatchingIfIdle()
    {
        lock (_watchLock)
        {
            Interlocked.Exchange(ref _watching, 0);
            var work = false;
            foreach (var pair in _connections)
            {
                if (pair.Value.HasWork(exact: true))
                {
                    work = true;
                    break;
                }
            }

            if (work || AnyLoopBusy() || _disposed)
            {
                Volatile.Write(ref _watching, _disposed ? 0 : 1);
                return;
            }

            _watchdog.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>True when a loop is running a connection (possibly inside a caller's callback that may overrun).</summary>
    internal bool AnyLoopBusy()
    {
        lock (_loopsLock)
        {
            return _loops.Exists(l => Volatile.Read(ref l.BusySince) != 0);
        }
    }

    private void AddLoopIfAllStuck()
    {
        var now = Now;
        lock (_loopsLock)
        {
            if (_loops.Count >= _baseLoops + MaxExtraLoops || !_loops.TrueForAll(l => IsStuck(l, now)))
            {
                return;
            }
        }

        StartLoop(extra: true);
    }

    private sealed class LoopState(bool extra)
    {
        public readonly bool Extra = extra;

        /// <summary>The loop's thread (set before it starts).</summary>
        public Thread? Thread;

        /// <summary>
        /// When the loop started on its current connection (<see cref="Now"/>, milliseconds: the
        /// coarse clock is read twice per event, and the 100 ms it is compared with needs no finer one), or 0 while it waits.
        /// </summary>
        public long BusySince;
    }
}
