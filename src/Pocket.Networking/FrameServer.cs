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
    private readonly ConcurrentDictionary<long, Socket> _connections = new();
    private readonly ConcurrentDictionary<long, Thread> _connectionThreads = new();
    private Socket? _listener;
    private Thread? _acceptThread;
    private long _nextConnectionId;
    private volatile bool _stopping;

    public FrameServer(string name, FrameServerOptions options, IFrameHandler handler, ILogger logger)
    {
        _name = name;
        _options = options;
        _handler = handler;
        _logger = logger;
    }

    /// <summary>The bound address (with the real port when port 0 was asked for).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

    public int ConnectionCount => _connections.Count;

    public void Start()
    {
        var listener = new Socket(_options.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(_options.EndPoint);
        listener.Listen(512);
        _listener = listener;
        EndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = $"{_name} accept" };
        _acceptThread.Start();
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
            _connections[id] = socket;
            var thread = new Thread(() => ConnectionLoop(id, socket)) { IsBackground = true, Name = $"{_name} conn {id}" };
            _connectionThreads[id] = thread;
            thread.Start();
        }
    }

    private void ConnectionLoop(long id, Socket socket)
    {
        var remote = socket.RemoteEndPoint?.ToString() ?? "?";
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
            _connectionThreads.TryRemove(id, out _);
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

    public void Dispose()
    {
        _stopping = true;
        _listener?.Dispose();

        // Once the accept loop is gone no connection can be added behind the loop below.
        _acceptThread?.Join(TimeSpan.FromSeconds(5));
        foreach (var socket in _connections.Values)
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
        foreach (var thread in _connectionThreads.Values)
        {
            if (thread == Thread.CurrentThread)
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
