using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Pocket.Networking;

/// <summary>A plain client connection the client loops read: called on a loop when its socket has input.</summary>
internal interface IClientLoopConnection
{
    /// <summary>
    /// Reads what has arrived without waiting, completes its callers inline, and re-arms the connection
    /// (<see cref="ClientLoops.Rearm"/>) unless it failed.
    /// </summary>
    void OnReadable();

    /// <summary>
    /// Called on the loops' timer every 100 ms for every connection: a cheap look for late requests or an overrunning
    /// callback, which hands any real work to the thread pool (it must not block: the other connections wait for it).
    /// </summary>
    void OnTick();
}

/// <summary>
/// The threads that read replies for every plain client connection in the process (Pocket's
/// <see cref="FrameConnection"/>, and the load generator's raw RESP connections, so that both sides of a comparison
/// are driven the same way): a few event loops over one
/// epoll set, as on the servers, instead of a reader thread per connection (a function talking to many nodes, the
/// gateway and a fan-in benchmark each held a thread per connection). Each connection is armed one-shot, so one
/// loop owns it from the wake-up until it re-arms it, reads what has arrived and completes its callers inline (no
/// hop to another thread). A caller's continuation that blocks a loop (sync-over-async) must not stall the other
/// connections: when every loop has been busy for longer than <see cref="Stuck"/>, another loop is started, and it
/// leaves again once the others are free.
/// </summary>
internal sealed unsafe class ClientLoops
{
    private const int MaxEvents = 64;

    /// <summary>Loops started beyond the base number, at most, while others are blocked.</summary>
    private const int MaxExtraLoops = 64;

    private static readonly TimeSpan Stuck = TimeSpan.FromMilliseconds(100);
    private static readonly Lazy<ClientLoops> SharedLoops = new(() => new ClientLoops(Math.Clamp(Environment.ProcessorCount, 1, 8)));

    private readonly int _epoll;
    private readonly int _baseLoops;
    private readonly ConcurrentDictionary<ulong, IClientLoopConnection> _connections = new();
    private readonly Lock _loopsLock = new();
    private readonly List<LoopState> _loops = [];
    private readonly ITimer _watchdog;
    private long _nextId;
    private int _ticking;

    private ClientLoops(int loops)
    {
        _epoll = Linux.CreateEpoll();
        _baseLoops = loops;
        for (var i = 0; i < loops; i++)
        {
            StartLoop(extra: false);
        }

        _watchdog = TimeProvider.System.CreateTimer(_ => Tick(), null, Stuck, Stuck);
    }

    /// <summary>The loops of this process, started with the first plain connection.</summary>
    public static ClientLoops Shared => SharedLoops.Value;

    /// <summary>An id for a connection, taken before <see cref="Add"/>: its first event may arrive before Add returns.</summary>
    public ulong NewId() => (ulong)Interlocked.Increment(ref _nextId);

    /// <summary>Starts watching a connection under its id (for <see cref="Rearm"/> and <see cref="Remove"/>).</summary>
    public void Add(ulong id, IClientLoopConnection connection, nint fd)
    {
        _connections[id] = connection;
        if (!Linux.EpollCtl(_epoll, Linux.EpollCtlAdd, (int)fd, Linux.EpollIn | Linux.EpollRdHup | Linux.EpollOneShot, id))
        {
            _connections.TryRemove(id, out _);
            throw new IOException($"epoll_ctl add failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>
    /// Hands the connection back to the loops, to be read when data arrives (at once, if some already has). With
    /// <paramref name="runNow"/> a loop runs it at once even if nothing more arrives: replies already read into the
    /// connection's own buffer are invisible to epoll, so the connection is armed for "writable" as well, which a
    /// socket with room in its send buffer always is. False when epoll refused (the connection can no longer be read).
    /// </summary>
    public bool Rearm(ulong id, nint fd, bool runNow = false) =>
        Linux.EpollCtl(_epoll, Linux.EpollCtlMod, (int)fd, Linux.EpollIn | Linux.EpollRdHup | Linux.EpollOneShot | (runNow ? Linux.EpollOut : 0), id);

    /// <summary>
    /// <see cref="Rearm(ulong, nint, bool)"/> for a socket's handle, held around the call so that its descriptor
    /// cannot be closed, and its number reused by another connection, under it. The handle is never held across a
    /// caller's continuation (a continuation may close the connection, and closing waits for the handle). True when
    /// armed, or when the socket is closed already (there is nothing left to read: whoever closed it failed its
    /// callers); false with epoll's <paramref name="errno"/> when epoll refused.
    /// </summary>
    public bool Rearm(ulong id, SafeHandle socket, bool runNow, out int errno)
    {
        errno = 0;
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            if (!Rearm(id, socket.DangerousGetHandle(), runNow))
            {
                errno = Marshal.GetLastPInvokeError();
                return false;
            }

            return true;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>Stops watching a connection (before its socket is closed).</summary>
    public void Remove(ulong id, nint fd)
    {
        _connections.TryRemove(id, out _);
        Linux.EpollCtl(_epoll, Linux.EpollCtlDel, (int)fd, 0, 0);
    }

    private void StartLoop(bool extra)
    {
        var state = new LoopState(extra);
        Thread thread;
        lock (_loopsLock)
        {
            _loops.Add(state);
            thread = new Thread(() => Loop(state)) { IsBackground = true, Name = $"pocket client loop {_loops.Count - 1}" };
        }

        thread.Start();
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
                    if (_connections.TryGetValue(Linux.EventData(events, i), out var connection))
                    {
                        Volatile.Write(ref state.BusySince, Environment.TickCount64);
                        connection.OnReadable();
                        Volatile.Write(ref state.BusySince, 0);
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
        }
    }

    private static bool IsStuck(LoopState state, long now)
    {
        var since = Volatile.Read(ref state.BusySince);
        return since != 0 && now - since >= (long)Stuck.TotalMilliseconds;
    }

    private bool TryRetire(LoopState state)
    {
        var now = Environment.TickCount64;
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
            foreach (var pair in _connections)
            {
                pair.Value.OnTick();
            }
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    private void AddLoopIfAllStuck()
    {
        var now = Environment.TickCount64;
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

        /// <summary>
        /// When the loop started on its current connection (<see cref="Environment.TickCount64"/>, milliseconds: the
        /// coarse clock is read twice per event, and the 100 ms it is compared with needs no finer one), or 0 while it waits.
        /// </summary>
        public long BusySince;
    }
}
