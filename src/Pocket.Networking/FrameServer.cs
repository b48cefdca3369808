using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// A TCP listener whose connections are served by a few event-loop threads (see <see cref="EventLoopGroup"/>),
/// however many there are: the loops accept too, and each reads, parses and handles frames inline, with no hop to
/// another thread per request; handlers that block (device I/O) run on a small I/O pool. TLS connections are served
/// the same way, through a <see cref="TlsTransport"/> (an <see cref="SslStream"/> over in-memory ciphertext). See
/// docs/architecture.md.
/// </summary>
public sealed class FrameServer : IDisposable
{
    private readonly FrameServerOptions _options;
    private readonly IFrameHandler _handler;
    private readonly ILogger _logger;
    private readonly string _name;
    private readonly ConcurrentDictionary<long, Connection> _connections = new();
    private readonly Lock _idleCheck = new();
    private LoopAcceptor? _acceptor;
    private EventLoopGroup? _loops;
    private SslServerAuthenticationOptions? _tlsOptions;
    private long _bufferedBytes;
    private int _maxConnections;
    private ITimer? _idleTimer;
    private RefusalLog? _overLimit;
    private RefusalLog? _outOfDescriptors;
    private long _nextConnectionId;
    private volatile bool _stopping;
    private int _disposed;

    public FrameServer(string name, FrameServerOptions options, IFrameHandler handler, ILogger logger)
    {
        options.Validate();
        _name = name;
        _options = options;
        _handler = options.WrapHandler?.Invoke(handler) ?? handler;
        _logger = logger;
        ReplyPause = Math.Max(1, Math.Min(options.ReplyPauseBytes, options.MaxReplyBacklog / 2));
    }

    /// <summary>The bound address (with the real port when port 0 was asked for).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

    public int ConnectionCount => _connections.Count;

    /// <summary>Connections accepted beyond this are closed at once (from the options, or from the open-file limit).</summary>
    public int MaxConnections => _maxConnections;

    /// <summary>Request bytes held now in receive buffers grown past the standard size (bounded by the options).</summary>
    public long BufferedRequestBytes => Interlocked.Read(ref _bufferedBytes);

    internal FrameServerOptions Options => _options;

    /// <summary>
    /// The pause in effect (every connection reads it before each request): <see cref="FrameServerOptions.ReplyPauseBytes"/>,
    /// at most half the bound, so one reply more stays within it.
    /// </summary>
    internal int ReplyPause { get; }

    internal ILogger Logger => _logger;

    internal string Name => _name;

    internal EventLoopGroup Loops => _loops!;

    internal bool Stopping => _stopping;

    /// <summary>New plain connections whose first request was read in the first turn of the loop that accepted them (tests).</summary>
    internal long FirstReadsAtAccept => _loops?.FirstReadsAtAccept ?? 0;

    /// <summary>
    /// The runtime builds its socket telemetry on a socket's first successful receive, loading an assembly from disk.
    /// A server whose first receive comes while it is out of descriptors (connects past the open-file limit) failed
    /// that load, and a failed type initializer fails every receive after it: built once at start instead.
    /// </summary>
    private static readonly Lazy<bool> SocketTelemetryBuilt = new(() =>
    {
        if (Type.GetType("System.Net.Sockets.SocketsTelemetry, System.Net.Sockets") is { } telemetry)
        {
            System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(telemetry.TypeHandle);
        }

        return true;
    });

    public void Start()
    {
        var fileLimit = ConnectionDescriptors.Refresh().FileLimit;
        _ = SocketTelemetryBuilt.Value;
        if (_options.Certificate is { } certificate)
        {
            // Built once (the chain, offline): every handshake then starts from it.
            _tlsOptions = new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true),
            };
        }

        _maxConnections = _options.MaxConnections > 0
            ? _options.MaxConnections
            : fileLimit is null ? 1024 - ConnectionDescriptors.Headroom : ConnectionDescriptors.AcceptBudget;
        var listener = new Socket(_options.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        // No ReuseAddress: on Linux .NET maps it to SO_REUSEPORT as well, and a second server on the same port then
        // bound silently and took half of the first one's connections.
        try
        {
            listener.Bind(_options.EndPoint);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            listener.Dispose();
            throw new PortInUseException(_name, _options.EndPoint, ex);
        }

        _overLimit = new RefusalLog(
            () => NetworkingLog.TooManyConnections(_logger, _name, _maxConnections),
            (count, period) => NetworkingLog.TooManyConnectionsMore(_logger, _name, count, (int)period.TotalSeconds, _maxConnections),
            _options.TimeProvider);
        _outOfDescriptors = new RefusalLog(
            () => NetworkingLog.OutOfDescriptors(_logger, _name, ConnectionDescriptors.AcceptBudget),
            (count, period) => NetworkingLog.OutOfDescriptorsMore(_logger, _name, count, (int)period.TotalSeconds, ConnectionDescriptors.AcceptBudget),
            _options.TimeProvider);
        listener.Listen(_options.ListenBacklog);
        EndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _loops = new EventLoopGroup(_name, _options.LoopCount, _options.IoThreads, _options.StopTimeout);
        _acceptor = new LoopAcceptor(this, listener, _loops, _options.TimeProvider);
        _acceptor.Start();
        if (_options.ClosesIdle || _options.ClosesStalled)
        {
            // Checked four times per timeout: a connection is closed between one and 1.25 timeouts after it went quiet.
            var shortest = Math.Min(
                _options.ClosesIdle ? _options.IdleTimeout.Ticks : long.MaxValue,
                _options.ClosesStalled ? _options.ReplyStallTimeout.Ticks : long.MaxValue);
            var period = TimeSpan.FromTicks(Math.Max(shortest / 4, TimeSpan.TicksPerMillisecond));
            _idleTimer = _options.TimeProvider.CreateTimer(_ => CloseIdle(), null, period, period);
        }

        NetworkingLog.Listening(_logger, _name, EndPoint.ToString());
        NetworkingLog.ConnectionLimit(_logger, _name, _maxConnections, fileLimit?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown");
        if (fileLimit is { } limit && _maxConnections > ConnectionDescriptors.AcceptBudget)
        {
            NetworkingLog.ConnectionLimitAboveFileLimit(_logger, _name, _maxConnections, limit, ConnectionDescriptors.AcceptBudget);
        }
    }

    /// <summary>Adds (or with a negative count, releases) request bytes buffered past the standard size; false over the bound.</summary>
    internal bool ChargeBuffered(int bytes)
    {
        var now = Interlocked.Add(ref _bufferedBytes, bytes);
        if (bytes > 0 && now > _options.MaxBufferedRequestBytes)
        {
            Interlocked.Add(ref _bufferedBytes, -bytes);
            return false;
        }

        return true;
    }

    internal void Unregister(long id)
    {
        if (_connections.TryRemove(id, out _))
        {
            ConnectionDescriptors.Return();
        }
    }

    private long _gatheredReplies;
    private long _replyPauses;
    private long _stalledReaders;

    /// <summary>
    /// Large replies whose header and data were sent with one gathered system call (tests): all of it when the socket
    /// had room, else the start, the rest queued for the socket to take.
    /// </summary>
    internal long GatheredReplies => Interlocked.Read(ref _gatheredReplies);

    internal void CountGatheredReply() => Interlocked.Increment(ref _gatheredReplies);

    /// <summary>Times a connection's requests were held back because its peer let replies wait (see <see cref="FrameServerOptions.ReplyPauseBytes"/>).</summary>
    public long ReplyPauses => Interlocked.Read(ref _replyPauses);

    /// <summary>Connections closed because their peer read none of its waiting replies for long (see <see cref="FrameServerOptions.ReplyStallTimeout"/>).</summary>
    public long StalledReaders => Interlocked.Read(ref _stalledReaders);

    internal void CountReplyPause() => Interlocked.Increment(ref _replyPauses);

    /// <summary>
    /// Sets up a connection just accepted by an event loop (see <see cref="LoopAcceptor"/>) and returns it, owned by the
    /// accepting loop, which runs its first turn next and adds it to epoll at the end of that turn (a TLS one too, under
    /// a <see cref="TlsTransport"/>). Null when it was refused (over the connection limit) or failed.
    /// </summary>
    internal LoopConnection? Admit(int fd, IPEndPoint? peer)
    {
        if (_connections.Count >= _maxConnections)
        {
            // Closed as it came, with an orderly end: a socket handle's own disposal may reset it, which a peer whose
            // connect has not yet been seen complete reads as a failed connect.
            _overLimit!.Refused();
            Linux.Close(fd);
            return null;
        }

        if (!ConnectionDescriptors.TryTake())
        {
            _outOfDescriptors!.Refused();
            Linux.Close(fd);
            return null;
        }

        var remote = peer?.ToString() ?? "?";
        return _tlsOptions is null ? AdmitPlain(fd, remote) : AdmitTls(fd, remote);
    }

    /// <summary>
    /// A plain connection needs no <see cref="Socket"/>: accept4 made it non-blocking and reported the peer, so setting
    /// TCP_NODELAY is its one system call before its first turn reads (a Socket made from the descriptor cost eight more,
    /// 23-34 us at p50 of a fresh connection's first request on a loaded machine: docs/benchmarks.md, "A fresh
    /// connection's first request").
    /// </summary>
    private LoopConnection? AdmitPlain(int fd, string remote)
    {
        var handle = new AcceptedSocketHandle(fd);
        if (!Linux.SetNoDelay(handle, out var errno))
        {
            NetworkingLog.AcceptFailed(_logger, _name, $"setsockopt TCP_NODELAY: errno {errno}");
            handle.Dispose();
            ConnectionDescriptors.Return();
            return null;
        }

        var id = Interlocked.Increment(ref _nextConnectionId);
        var connection = new Connection(handle, null, remote, _options.TimeProvider.GetTimestamp())
        {
            // Added to epoll by its first turn, on the accepting loop (see LoopConnection.RunFirst).
            Loop = new LoopConnection(this, _handler, handle, id, remote),
        };
        _connections[id] = connection;
        return connection.Loop;
    }

    private LoopConnection? AdmitTls(int fd, string remote)
    {
        var handle = new SafeSocketHandle(fd, ownsHandle: true);

        Socket socket;
        try
        {
            socket = new Socket(handle);
        }
        catch (SocketException ex)
        {
            // Reset by the peer before it was set up.
            NetworkingLog.AcceptFailed(_logger, _name, ex.Message);
            handle.Dispose();
            ConnectionDescriptors.Return();
            return null;
        }

        var id = Interlocked.Increment(ref _nextConnectionId);
        try
        {
            socket.NoDelay = true;
            var connection = new Connection(socket.SafeHandle, socket, remote, _options.TimeProvider.GetTimestamp());
            // Never blocks, never waits on a handler: the accepting loop reads it at once (its handshake starts, and
            // goes on with its frames after it as the loops bring its bytes; see TlsTransport).
            socket.Blocking = false;
            connection.Loop = new LoopConnection(this, _handler, socket.SafeHandle, id, remote, new TlsTransport(socket, _tlsOptions!), socket);
            // Added to epoll by its first turn, on the accepting loop (see LoopConnection.RunFirst).
            _connections[id] = connection;
            return connection.Loop;
        }
        catch (Exception ex) when (ex is SocketException or IOException)
        {
            NetworkingLog.AcceptFailed(_logger, _name, ex.Message);
            _connections.TryRemove(id, out _);
            ConnectionDescriptors.Return();
            socket.Dispose();
            return null;
        }
    }

    /// <summary>
    /// Checks a request header and starts its frame on <paramref name="context"/>. A bad header is answered once and false returned: the frame boundary can no longer be trusted, so the
    /// connection closes once the reply is written. <paramref name="prefix"/> is how many body bytes the frame is
    /// admitted on (see <see cref="IFrameHandler.PrefixLength"/>), or -1 when it needs no admission.
    /// </summary>
    internal bool TryBeginFrame(FrameContext context, ReadOnlySpan<byte> bytes, out int prefix)
    {
        var limits = _options.Limits;
        var status = FrameHeader.TryRead(bytes, limits.MaxAnyBody, out var header);
        if (status == Status.Ok && header.IsReply)
        {
            status = Status.BadRequest;
        }

        if (status == Status.Ok && header.BodyLength > limits.MaxBodyFor(header.Opcode))
        {
            status = Status.FrameTooLarge;
        }

        if (status != Status.Ok)
        {
            var requestId = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes[12..]);
            context.Begin(new FrameHeader((Opcode)bytes[1], FrameFlags.None, Status.Ok, 0, requestId, JobToken.None));
            context.ReplyError(status, DescribeBadHeader(status, bytes, limits));
            NetworkingLog.BadFrame(_logger, _name, context.Remote, status.ToString());
            prefix = -1;
            return false;
        }

        context.Begin(header);
        prefix = _handler.PrefixLength(header);
        if (prefix < 0 && header.BodyLength > FrameContext.InlineBody)
        {
            prefix = 0;
        }

        if (prefix >= 0)
        {
            prefix = Math.Min(Math.Min(prefix, FrameContext.MaxPrefix), header.BodyLength);
        }

        return true;
    }

    private static string DescribeBadHeader(Status status, ReadOnlySpan<byte> header, ProtocolLimits limits) => status switch
    {
        Status.VersionMismatch => $"unsupported protocol version {header[0]}; this server speaks {FrameHeader.CurrentVersion}",
        Status.FrameTooLarge => $"body length {System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(header[8..])} is over the limit for opcode {header[1]} ({limits.MaxBodyFor((Opcode)header[1])} bytes)",
        _ => "malformed frame header",
    };

    /// <summary>
    /// Closes the connections idle for longer than <see cref="FrameServerOptions.IdleTimeout"/>. Only their receive
    /// side is shut: a request that arrives meanwhile is still read, answered and flushed before the connection
    /// thread sees the end of the stream and closes the socket, so the race with a late request loses nothing.
    /// A connection with replies waiting whose peer read none of them for <see cref="FrameServerOptions.ReplyStallTimeout"/>
    /// (or the idle timeout, whichever is shorter) is shut both ways: its owner's next write fails and closes it.
    /// </summary>
    private void CloseIdle()
    {
        if (!_idleCheck.TryEnter())
        {
            return;
        }

        try
        {
            var now = _options.TimeProvider.GetTimestamp();
            foreach (var connection in _connections.Values)
            {
                if (connection.IdleFor(now, _options.TimeProvider) is not { } idle || _stopping)
                {
                    continue;
                }

                if (connection.Loop?.RepliesWaiting is > 0 and var waiting)
                {
                    // Counted and logged once: a loaded owner may take longer than a check period to close it.
                    if (!connection.StallShut && ((_options.ClosesStalled && idle >= _options.ReplyStallTimeout) || (_options.ClosesIdle && idle >= _options.IdleTimeout)))
                    {
                        NetworkingLog.RepliesStalled(_logger, _name, connection.Remote, waiting, idle);
                        Interlocked.Increment(ref _stalledReaders);
                        connection.StallShut = true;
                        connection.Shutdown(SocketShutdown.Both);
                    }

                    continue;
                }

                if (_options.ClosesIdle && idle >= _options.IdleTimeout && !(connection.Loop?.Context is { } context && _handler.HoldsState(context)))
                {
                    NetworkingLog.IdleClosed(_logger, _name, connection.Remote, idle);
                    try
                    {
                        connection.Shutdown(SocketShutdown.Receive);
                    }
                    catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                    {
                        // Closed meanwhile.
                    }
                }
            }
        }
        finally
        {
            _idleCheck.Exit();
        }
    }

    /// <summary>One accepted connection; the idle check's bookkeeping is touched only under its lock.</summary>
    private sealed class Connection(SafeHandle handle, Socket? socket, string remote, long acceptedAt)
    {
        public string Remote { get; } = remote;

        /// <summary>Set once the connection is handed to the event loops (plain or TLS).</summary>
        public LoopConnection? Loop;

        /// <summary>Set when the idle check shut it for a peer that reads none of its replies.</summary>
        public bool StallShut;

        private long _seenReads = -1;
        private long _quietSince = acceptedAt;

        /// <summary>
        /// How long the connection has waited for its peer, or null when it is at work: it waits while it made no
        /// progress (see <see cref="LoopConnection.Activity"/>) since the last check and runs no handler.
        /// </summary>
        public TimeSpan? IdleFor(long now, TimeProvider time)
        {
            if (Loop is { } loop)
            {
                var activity = loop.Activity;
                if (activity != _seenReads || loop.Busy)
                {
                    _seenReads = activity;
                    _quietSince = now;
                    return null;
                }

                return time.GetElapsedTime(_quietSince, now);
            }

            return null;
        }

        /// <summary>Shuts one or both directions (the loop that owns it reads the end); closed meanwhile, nothing.</summary>
        public void Shutdown(SocketShutdown how)
        {
            try
            {
                Linux.Shutdown(handle, how);
            }
            catch (ObjectDisposedException)
            {
            }
        }

        /// <summary>Closes it (a TLS one through its <see cref="Socket"/>).</summary>
        public void Dispose()
        {
            if (socket is not null)
            {
                socket.Dispose();
            }
            else
            {
                handle.Dispose();
            }
        }
    }

    private void ShutDownConnections()
    {
        foreach (var connection in _connections.Values)
        {
            connection.Shutdown(SocketShutdown.Both);

            // A plain connection's socket is closed by its owner, after it left epoll (its number could be reused).
            if (connection.Loop is null)
            {
                connection.Dispose();
            }
        }
    }

    /// <summary>
    /// Completes once the server is disposed and no handler runs any more: at once when every loop and I/O thread left
    /// within <see cref="FrameServerOptions.StopTimeout"/>, else when the last handler held past it returns. What the
    /// handlers read (a role's own memory) may be freed only then.
    /// </summary>
    public Task Stopped => _loops?.Ended ?? Task.CompletedTask;

    /// <summary>
    /// Runs <paramref name="release"/> (freeing what a role's handlers read: its memory, its devices) once
    /// <paramref name="server"/> has stopped and no handler can run any more: at once, on the caller's thread, when
    /// <see cref="Stopped"/> has completed (or there is no server), else when the last handler held past the stop
    /// returns. The task completes after it ran.
    /// </summary>
    public static Task ReleaseWhenStoppedAsync(FrameServer? server, Action release)
    {
        var stopped = server?.Stopped ?? Task.CompletedTask;
        if (stopped.IsCompleted)
        {
            release();
            return Task.CompletedTask;
        }

        return stopped.ContinueWith(static (_, state) => ((Action)state!)(), release, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>
    /// Stops accepting, shuts every connection (its peer sees the close at once) and waits up to
    /// <see cref="FrameServerOptions.StopTimeout"/> for the loops and the I/O pool to leave their handlers, then closes
    /// the connections and returns their buffers to the pool. A connection whose handler is still running past that is
    /// left to the thread running it, which closes it (and returns its buffers) when the handler returns: its buffers
    /// are never handed to another connection while the handler may still read or write them (see <see cref="Stopped"/>).
    /// </summary>
    public void Dispose()
    {
        // Once: a second pass would signal and close the loops' descriptors again, whose numbers may be another file's by then.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _stopping = true;
        _idleTimer?.Dispose();

        // The loops accept nothing once they see the server stopping; one in the middle of a batch may still add a
        // connection or two, which the passes after the loops are gone end.
        _acceptor?.Dispose();
        ShutDownConnections();
        if (_loops is { } loops)
        {
            var ended = loops.Stop();
            var held = 0;
            foreach (var loop in _connections.Values.Select(c => c.Loop).OfType<LoopConnection>())
            {
                // With every thread gone nobody owns a connection; otherwise only the ones no thread owns are closed here.
                if (ended || loop.TryClaim())
                {
                    loop.Close(null);
                }
                else
                {
                    held++;
                }
            }

            if (!ended)
            {
                NetworkingLog.StoppedWithHandlersRunning(_logger, _name, _options.StopTimeout, held);
            }

            loops.Dispose();
        }

        ShutDownConnections();

        // Refusals counted and not yet logged get their line.
        _overLimit?.Dispose();
        _outOfDescriptors?.Dispose();
    }
}
