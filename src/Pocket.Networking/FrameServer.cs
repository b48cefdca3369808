using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// A TCP listener that runs each connection on its own thread with blocking I/O. On two cores this beat
/// async sockets on latency and CPU (no thread-pool hop per request; see docs/architecture.md), and it
/// lets a handler read a request body straight into its final place in memory.
/// </summary>
public sealed class FrameServer : IDisposable
{
    private readonly FrameServerOptions _options;
    private readonly IFrameHandler _handler;
    private readonly ILogger _logger;
    private readonly string _name;
    private readonly ConcurrentDictionary<long, Connection> _connections = new();
    private readonly Lock _idleCheck = new();
    private Socket? _listener;
    private Thread? _acceptThread;
    private ITimer? _idleTimer;
    private long _nextConnectionId;
    private volatile bool _stopping;

    public FrameServer(string name, FrameServerOptions options, IFrameHandler handler, ILogger logger)
    {
        options.Validate();
        _name = name;
        _options = options;
        _handler = options.WrapHandler?.Invoke(handler) ?? handler;
        _logger = logger;
    }

    /// <summary>The bound address (with the real port when port 0 was asked for).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

    public int ConnectionCount => _connections.Count;

    public void Start()
    {
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

        listener.Listen(512);
        _listener = listener;
        EndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = $"{_name} accept" };
        _acceptThread.Start();
        if (_options.ClosesIdle)
        {
            // Checked four times per timeout: a connection is closed between one and 1.25 timeouts after it went quiet.
            var period = TimeSpan.FromTicks(Math.Max(_options.IdleTimeout.Ticks / 4, TimeSpan.TicksPerMillisecond));
            _idleTimer = _options.TimeProvider.CreateTimer(_ => CloseIdle(), null, period, period);
        }

        NetworkingLog.Listening(_logger, _name, EndPoint.ToString());
    }

    private void AcceptLoop()
    {
        while (!_stopping)
        {
            Socket socket;
            try
            {
                socket = _listener!.Accept();
            }
            catch (SocketException) when (_stopping)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                NetworkingLog.AcceptFailed(_logger, _name, ex.Message);
                continue;
            }

            if (_connections.Count >= _options.MaxConnections)
            {
                NetworkingLog.TooManyConnections(_logger, _name, _options.MaxConnections);
                socket.Dispose();
                continue;
            }

            socket.NoDelay = true;
            var id = Interlocked.Increment(ref _nextConnectionId);
            var connection = new Connection(socket, socket.RemoteEndPoint?.ToString() ?? "?", _options.TimeProvider.GetTimestamp());
            connection.Thread = new Thread(() => ConnectionLoop(id, connection)) { IsBackground = true, Name = $"{_name} conn {id}" };
            _connections[id] = connection;
            connection.Thread.Start();
        }
    }

    private void ConnectionLoop(long id, Connection connection)
    {
        var socket = connection.Socket;
        var remote = connection.Remote;
        FrameContext? context = null;
        try
        {
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            if (_options.Certificate is { } certificate)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                tls.AuthenticateAsServer(certificate);
                stream = tls;
            }

            context = new FrameContext(stream, id, remote);
            Volatile.Write(ref connection.Context, context);
            Serve(context);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or System.Security.Authentication.AuthenticationException)
        {
            if (!_stopping)
            {
                NetworkingLog.ConnectionClosed(_logger, _name, remote, ex.Message);
            }
        }
        finally
        {
            if (context is not null)
            {
                try
                {
                    _handler.OnDisconnected(context);
                }
                catch (Exception ex)
                {
                    NetworkingLog.HandlerFailed(_logger, _name, ex);
                }
            }

            _connections.TryRemove(id, out _);
            socket.Dispose();
        }
    }

    private void Serve(FrameContext context)
    {
        Span<byte> headerBytes = stackalloc byte[FrameHeader.Size];
        var limits = _options.Limits;
        while (!_stopping)
        {
            if (!context.TryReadExactly(headerBytes))
            {
                return;
            }

            var status = FrameHeader.TryRead(headerBytes, limits.MaxAnyBody, out var header);
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
                // The frame boundary can no longer be trusted: answer once, then close.
                var requestId = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(headerBytes[12..]);
                context.Begin(new FrameHeader((Opcode)headerBytes[1], FrameFlags.None, Status.Ok, 0, requestId, JobToken.None));
                context.ReplyError(status, DescribeBadHeader(status, headerBytes, limits));
                context.FlushReplies();
                NetworkingLog.BadFrame(_logger, _name, context.Remote, status.ToString());
                return;
            }

            context.Begin(header);
            try
            {
                _handler.Handle(context);
            }
            catch (Exception ex) when (ex is not IOException and not SocketException and not ObjectDisposedException)
            {
                NetworkingLog.HandlerFailed(_logger, _name, ex);
                if (!context.Replied)
                {
                    context.SkipBody();
                    context.ReplyError(Status.InternalError, "internal error: " + ex.Message);
                }
            }

            if (context.BodyRemaining > 0)
            {
                context.SkipBody();
            }

            if (!context.Replied)
            {
                context.ReplyError(Status.InternalError, "internal error: request was not answered");
            }

            context.FlushIfIdle();
        }
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
                if (connection.IdleFor(now, _options.TimeProvider) is { } idle && idle >= _options.IdleTimeout && !_stopping &&
                    !(connection.Context is { } context && _handler.HoldsState(context)))
                {
                    NetworkingLog.IdleClosed(_logger, _name, connection.Remote, idle);
                    try
                    {
                        connection.Socket.Shutdown(SocketShutdown.Receive);
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
    private sealed class Connection(Socket socket, string remote, long acceptedAt)
    {
        public Socket Socket { get; } = socket;
        public string Remote { get; } = remote;
        public Thread? Thread;

        /// <summary>Set once the connection is set up (after TLS): until then it waits for the peer's handshake.</summary>
        public FrameContext? Context;

        private long _seenReads = -1;
        private long _quietSince = acceptedAt;

        /// <summary>
        /// How long the connection has waited for its peer, or null when it is at work. It waits while its thread
        /// is in a read (see <see cref="BufferedReader.Reads"/>) that has not returned since the last check.
        /// </summary>
        public TimeSpan? IdleFor(long now, TimeProvider time)
        {
            var reads = Volatile.Read(ref Context)?.Reads ?? -1;
            if (reads != _seenReads || (reads & 1) == 0)
            {
                _seenReads = reads;
                _quietSince = now;
                return null;
            }

            return time.GetElapsedTime(_quietSince, now);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _idleTimer?.Dispose();
        _listener?.Dispose();

        // Once the accept loop is gone no connection can be added behind the loop below.
        _acceptThread?.Join(TimeSpan.FromSeconds(5));
        foreach (var socket in _connections.Values.Select(c => c.Socket))
        {
            try
            {
                socket.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }

            socket.Dispose();
        }

        // A handler may be copying into memory its owner frees as soon as this returns (a storage node's
        // device), so wait for every connection thread to leave its handler; closed sockets make that quick.
        var deadline = Environment.TickCount64 + 5_000;
        foreach (var thread in _connections.Values.Select(c => c.Thread))
        {
            if (thread is null || thread == Thread.CurrentThread)
            {
                continue;
            }

            try
            {
                thread.Join(TimeSpan.FromMilliseconds(Math.Max(0, deadline - Environment.TickCount64)));
            }
            catch (ThreadStateException)
            {
                // Not started: it will find the server stopping and end at once.
            }
        }
    }
}
