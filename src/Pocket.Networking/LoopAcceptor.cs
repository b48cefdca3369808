using System.Net;
using System.Net.Sockets;

namespace Pocket.Networking;

/// <summary>
/// Accepts a frame server's connections on its event loops (no accept thread). The listener is non-blocking and sits
/// in the loops' epoll set level-triggered and one-shot: the loop that takes its event owns it alone, takes a bounded
/// batch from the kernel's queue, re-arms it (another loop may take the next batch meanwhile) and runs each new
/// connection's first turn itself, before any other wake-up: a function's first request is usually there already.
/// The loops share one epoll set, so EPOLLEXCLUSIVE (which stops several epoll sets waiting on one listener from all
/// waking) does not apply; a plain level-triggered registration would wake a second loop for the same connect, which
/// then finds the queue empty, and an edge-triggered one would lose the rest of a queue cut short by the batch bound.
/// </summary>
internal sealed class LoopAcceptor : IDisposable
{
    /// <summary>
    /// Connects taken per wake-up. Each runs its first turn (usually a request) on the accepting loop, so a storm of
    /// thousands of connects is taken a batch at a time between the turns of the connections already established.
    /// </summary>
    internal const int AcceptsPerWake = 16;

    private const int Eagain = 11;

    // Errors accept reports for the connection it was taking, not for the listener (accept(2), "Error handling"): the
    // next one in the queue is taken at once. Any other error (EMFILE, ENFILE, ENOBUFS, ENOMEM...) would come back on
    // every try, so the listener leaves epoll for a while instead of spinning the loop.
    private static readonly int[] ConnectionErrors = [1, 64, 71, 92, 95, 100, 101, 103, 110, 112, 113];

    private readonly FrameServer _server;
    private readonly Socket _listener;
    private readonly EventLoopGroup _loops;
    private readonly TimeProvider _time;
    private readonly Lock _retryLock = new();
    private ITimer? _retry;
    private bool _failing;
    private bool _disposed;

    public LoopAcceptor(FrameServer server, Socket listener, EventLoopGroup loops, TimeProvider time)
    {
        _server = server;
        _listener = listener;
        _loops = loops;
        _time = time;
        _listener.Blocking = false;
    }

    /// <summary>How long the listener stays out of epoll after an error that would repeat (e.g. out of descriptors).</summary>
    internal static TimeSpan RetryAfter { get; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Starts accepting: the loops take the listener's first event.</summary>
    public void Start()
    {
        if (!_loops.Listen(this, _listener))
        {
            throw new IOException("epoll_ctl add of the listener failed");
        }
    }

    /// <summary>
    /// Takes up to <see cref="AcceptsPerWake"/> connects (on the loop that took the listener's event, which owns it
    /// until it re-arms it) and adds the new connections to <paramref name="accepted"/>: each is owned by that loop,
    /// which runs its first turn next.
    /// </summary>
    public void Accept(List<LoopConnection> accepted)
    {
        for (var i = 0; i < AcceptsPerWake; i++)
        {
            if (_server.Stopping)
            {
                // A stopping server accepts nothing more, and the listener is not armed again.
                return;
            }

            int fd;
            int errno;
            IPEndPoint? remote;
            try
            {
                fd = Linux.AcceptNow(_listener.SafeHandle, out errno, out remote);
            }
            catch (ObjectDisposedException)
            {
                return;
            }

            if (fd >= 0)
            {
                _failing = false;
                if (_server.Admit(fd, remote) is { } connection)
                {
                    accepted.Add(connection);
                }

                continue;
            }

            if (errno == Eagain)
            {
                break;
            }

            if (Array.IndexOf(ConnectionErrors, errno) >= 0)
            {
                NetworkingLog.AcceptFailed(_server.Logger, _server.Name, $"errno {errno}");
                continue;
            }

            // Logged once until an accept succeeds again; the connects wait in the kernel's queue meanwhile.
            if (!_failing)
            {
                _failing = true;
                NetworkingLog.AcceptFailed(_server.Logger, _server.Name, $"errno {errno}; accepting again in {RetryAfter.TotalMilliseconds} ms");
            }

            RetryLater();
            return;
        }

        Arm();
    }

    private void Arm()
    {
        if (!_server.Stopping)
        {
            _loops.ArmListener(_listener);
        }
    }

    private void RetryLater()
    {
        lock (_retryLock)
        {
            if (_disposed)
            {
                return;
            }

            _retry?.Dispose();
            _retry = _time.CreateTimer(_ => Arm(), null, RetryAfter, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Stops the retry timer and closes the listener (a loop in an accept call holds it open until it returns).</summary>
    public void Dispose()
    {
        lock (_retryLock)
        {
            _disposed = true;
            _retry?.Dispose();
        }

        _listener.Dispose();
    }
}
