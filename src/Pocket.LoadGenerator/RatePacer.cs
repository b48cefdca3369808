using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Pocket.LoadGenerator;

/// <summary>
/// The open-loop schedule of one process's clients (`pocket bench --rate`). A closed loop on the same cores as the
/// servers offers more load to a faster server and so makes the load generator itself the tail; at a fixed offered rate
/// every system gets the same requests at the same times. The process's clients share one grid of slots
/// <c>1 / rate</c> apart: slot <c>j</c> is request <c>j / clients</c> of client <c>j % clients</c>, so each client's
/// requests are <c>clients / rate</c> apart and the clients' offsets are spread evenly over one such interval (they
/// never fire together). A client whose reply lands before its next slot waits for it here; one that is late sends at
/// once, and its latency still counts from the slot (no coordinated omission).
/// </summary>
/// <remarks>
/// .NET's timers fire on a ~1 ms tick, too coarse for 64 connections at 40 K ops/s (a request per connection every
/// 1.6 ms). One thread per process sleeps to the next slot with <c>clock_nanosleep</c>, its timer slack cut to 1 ns
/// so the kernel does not round the wake-up up by its default 50 us, and releases every client whose slot has come; a
/// released client's send runs inline on this thread (the send is one system call; a thread hop would cost a wake-up
/// per request). Once awake it also releases the slots of the next 100 us (<see cref="EarlyTicks"/>). The grid is fixed,
/// so no client ever has to wake the pacer early. How late the sends are is what the bench reports as send lag.
/// </remarks>
internal sealed partial class RatePacer : IDisposable
{
    /// <summary>The longest single sleep, so that <see cref="Dispose"/> is noticed soon at a low rate.</summary>
    private static readonly long MaxSleepTicks = Stopwatch.Frequency / 100;

    /// <summary>
    /// Once awake at a slot, the pacer also releases the slots due within this much: one wake-up for the clients of a
    /// 100 us window rather than one each (each wake-up costs the load generator CPU on the cores the servers use). A
    /// request sent early counts its latency from its send, so nothing is understated.
    /// </summary>
    internal static readonly long EarlyTicks = Stopwatch.Frequency / 10_000;

    private readonly long _start;
    private readonly double _slotTicks;
    private readonly int _clients;
    private readonly Waiter[] _waiters;
    private readonly Thread _thread;
    private readonly CancellationToken _cancellationToken;
    private long _passed = -1;
    private int _cancelled;
    private volatile bool _stopped;

    /// <summary>
    /// Starts the pacer: slot 0 is at <paramref name="start"/> (a <see cref="Stopwatch"/> timestamp). Once
    /// <paramref name="cancellationToken"/> is cancelled every wait, present and future, ends cancelled.
    /// </summary>
    public RatePacer(double opsPerSecond, int clients, long start, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(opsPerSecond);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(clients);
        _start = start;
        _slotTicks = Stopwatch.Frequency / opsPerSecond;
        _clients = clients;
        _cancellationToken = cancellationToken;
        _waiters = new Waiter[clients];
        for (var i = 0; i < clients; i++)
        {
            _waiters[i] = new Waiter();
        }

        _thread = new Thread(Run) { IsBackground = true, Name = "bench pacer" };
        _thread.Start();
    }

    /// <summary>When request <paramref name="request"/> of client <paramref name="client"/> is due (a <see cref="Stopwatch"/> timestamp).</summary>
    public long Due(int client, long request) => _start + (long)(Slot(client, request) * _slotTicks);

    /// <summary>
    /// Waits until the pacer reaches request <paramref name="request"/>'s slot of client <paramref name="client"/>,
    /// which the caller found still ahead (one wait per client at a time). The continuation runs on the pacer's thread.
    /// </summary>
    public ValueTask WaitAsync(int client, long request)
    {
        var waiter = _waiters[client];
        waiter.Core.Reset();
        Interlocked.Exchange(ref waiter.Armed, request);

        // The pacer may have passed the slot between the caller's check and the arming: then whoever disarms first
        // releases the client (the pacer writes _passed before it reads Armed, both with full fences).
        if (Interlocked.Read(ref _passed) >= Slot(client, request) && Interlocked.CompareExchange(ref waiter.Armed, -1, request) == request)
        {
            return ValueTask.CompletedTask;
        }

        // Likewise with a cancellation that the pacer has already handed out to the armed waiters.
        if (Volatile.Read(ref _cancelled) != 0 && Interlocked.CompareExchange(ref waiter.Armed, -1, request) == request)
        {
            return ValueTask.FromCanceled(_cancellationToken);
        }

        return new ValueTask(waiter, waiter.Core.Version);
    }

    /// <summary>
    /// Stops the pacer; its thread ends at its next wake-up (within 10 ms). Not joined: the round that disposes it may
    /// be running on that very thread, when the last client's reply completed there inline.
    /// </summary>
    public void Dispose() => _stopped = true;

    private long Slot(int client, long request) => client + (request * _clients);

    private void Run()
    {
        // PR_SET_TIMERSLACK = 29: this thread's sleeps end when asked, not up to 50 us later.
        _ = Prctl(29, 1, 0, 0, 0);
        long slot = 0;
        var awake = false;
        while (!_stopped)
        {
            if (_cancellationToken.IsCancellationRequested)
            {
                CancelAll();
                return;
            }

            var due = _start + (long)(slot * _slotTicks);
            var ahead = due - Stopwatch.GetTimestamp();
            if (ahead > (awake ? EarlyTicks : 0))
            {
                Sleep(Math.Min(ahead, MaxSleepTicks));
                awake = false;
                continue;
            }

            Interlocked.Exchange(ref _passed, slot);
            var client = (int)(slot % _clients);
            var waiter = _waiters[client];
            var request = slot / _clients;
            if (Interlocked.CompareExchange(ref waiter.Armed, -1, request) == request)
            {
                waiter.Core.SetResult(true);
            }

            slot++;
            awake = true;
        }
    }

    private void CancelAll()
    {
        Interlocked.Exchange(ref _cancelled, 1);
        foreach (var waiter in _waiters)
        {
            if (Interlocked.Exchange(ref waiter.Armed, -1) != -1)
            {
                waiter.Core.SetException(new OperationCanceledException(_cancellationToken));
            }
        }
    }

    private static void Sleep(long ticks)
    {
        var nanoseconds = (long)(ticks * (1e9 / Stopwatch.Frequency));
        var request = new Timespec { Seconds = nanoseconds / 1_000_000_000, Nanoseconds = nanoseconds % 1_000_000_000 };

        // CLOCK_MONOTONIC (1), relative; an interrupted sleep just goes round the loop again.
        _ = ClockNanosleep(1, 0, in request, IntPtr.Zero);
    }

    [LibraryImport("libc", EntryPoint = "clock_nanosleep")]
    private static partial int ClockNanosleep(int clock, int flags, in Timespec request, IntPtr remain);

    [LibraryImport("libc", EntryPoint = "prctl")]
    private static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    /// <summary>One client's wait: the request it waits to send (-1 when none), and the source its await completes on.</summary>
    private sealed class Waiter : IValueTaskSource
    {
        public long Armed = -1;

        // Inline, so the released client sends from the pacer's thread at once.
        public ManualResetValueTaskSourceCore<bool> Core = new() { RunContinuationsAsynchronously = false };

        public void GetResult(short token) => Core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => Core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            Core.OnCompleted(continuation, state, token, flags);
    }
}
