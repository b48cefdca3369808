using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Tasks.Sources;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// A decoded reply of <see cref="DataLength"/> body bytes. <see cref="Body"/> holds the body unless it was read into the
/// caller's buffer (then it is empty), or, when the request asked for a head of the reply in its buffer
/// (<see cref="FrameConnection.SendAsync"/>'s <c>replyHead</c>) and the body did not fit there, the bytes after that head.
/// </summary>
public readonly record struct FrameReply(Status Status, byte[] Body, int DataLength)
{
    public bool IsOk => Status == Status.Ok;

    /// <summary>The error message carried by a non-OK reply.</summary>
    public string Message => Body.Length == 0 ? Status.ToString() : Encoding.UTF8.GetString(Body);
}

/// <summary>Raised when a connection fails; every request in flight on it fails with this.</summary>
public sealed class ConnectionLostException : IOException
{
    public ConnectionLostException(string message, Exception? inner = null) : base(message, inner)
    {
    }

    /// <summary>
    /// True when the request never left this client: the connection had already failed (the server closed it as
    /// idle, say), so the request can go again on a new connection. Otherwise the server may have acted on it.
    /// </summary>
    public bool NotSent { get; init; }
}

/// <summary>Client connection settings.</summary>
public sealed record FrameConnectionOptions
{
    public ProtocolLimits Limits { get; init; } = ProtocolLimits.Default;

    /// <summary>Requests in flight per connection; further callers wait.</summary>
    public int MaxInFlight { get; init; } = 256;

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>When set, TLS is used and the server's certificate must match this host name.</summary>
    public string? TlsHost { get; init; }

    /// <summary>Certificate check for TLS; null uses the system's.</summary>
    public RemoteCertificateValidationCallback? CertificateValidation { get; init; }

    /// <summary>
    /// How long a request waits for its reply before it fails with <see cref="RequestTimeoutException"/> (an
    /// unresponsive or frozen server); <see cref="Timeout.InfiniteTimeSpan"/> waits forever. Checked ten times a second.
    /// </summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The client loops that read the connection and watch its requests; null: the process's shared ones (tests pass their own).</summary>
    internal ClientLoops? Loops { get; init; }
}

/// <summary>A request got no reply within <see cref="FrameConnectionOptions.RequestTimeout"/>; the server may still carry it out.</summary>
public sealed class RequestTimeoutException : TimeoutException
{
    public RequestTimeoutException(string message) : base(message)
    {
    }

    /// <summary>The server that did not answer (host:port).</summary>
    public string Remote { get; init; } = "";

    public Opcode Opcode { get; init; }
}

/// <summary>
/// One multiplexed connection to a server: any number of callers send requests that are pipelined on the
/// socket and matched to replies by request id. Replies are read by the process's client event loops
/// (<see cref="ClientLoops"/>), on TLS too (decrypted by a <see cref="TlsTransport"/>), placing large reply bodies
/// straight into the caller's buffer. Thread-safe.
/// </summary>
public sealed class FrameConnection : IAsyncDisposable, IDisposable, IClientLoopConnection
{
    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly FrameConnectionOptions _options;
    // The table of requests in flight. The first sits in a field of its own, entered and taken with one
    // compare-and-swap each: one request outstanding per connection is the serverless shape, and at 1,024 connections
    // the lock, the dictionary's arrays and the pool's stack were each a cache miss per request. Requests beside it go
    // to a plain dictionary under a lock (ConcurrentDictionary allocates a node per insert). Whoever takes a request
    // (Pending.TryTake: the reader, a cancellation, the timeout, a failure) is the one that completes it.
    private Pending? _first;
    private readonly Dictionary<uint, Pending> _pending = [];
    private readonly Lock _pendingLock = new();
    private Pending? _sparePending;
    private readonly Stack<Pending> _pendingPool = new();
    private readonly AsyncGate _writeLock = new(1);
    private readonly AsyncGate _inFlight;
    private readonly TlsTransport? _tls;
    private readonly ClientLoops _loops;
    private readonly ulong _loopId;
    // Buffers start small and grow with use: a process may hold thousands of connections (a fan-in benchmark), and
    // 256 KiB each (as these were) is 2.5 GiB at 10,000. A small request (a get, a lookup) is under 300 bytes; a
    // larger one grows the gather buffers once; the buffer of frames over the gather limit is made by the first.
    private readonly Lock _gatherLock = new();
    private byte[] _gathered = new byte[512];
    private byte[] _spare = new byte[512];
    private int _gatheredLength;
    private bool _flushing;
    private uint _nextRequestId;
    private volatile Exception? _failure;

    private FrameConnection(Socket socket, Stream stream, TlsTransport? tls, string remote, FrameConnectionOptions options)
    {
        _socket = socket;
        _stream = stream;
        _tls = tls;
        Remote = remote;
        _options = options;
        _inFlight = new AsyncGate(options.MaxInFlight);

        // Read by the shared loops, plain or TLS (its handshake is done by now), so a connection costs no thread; they
        // also watch it (IClientLoopConnection.OnTick) with their one timer: 10,000 connections each with a 100 ms
        // timer of their own were 100,000 thread-pool callbacks a second.
        _in = new byte[16 << 10];
        _loops = options.Loops ?? ClientLoops.Shared;
        _loopId = _loops.NewId();
        _loops.Add(_loopId, this, socket.Handle);
    }

    public string Remote { get; }

    /// <summary>The socket's own address, as the kernel reports it (getsockname): tests read its family back.</summary>
    internal EndPoint? LocalEndPoint => _socket.LocalEndPoint;

    public bool IsConnected => _failure is null;

    /// <summary>
    /// Connects to a server. Fails with <see cref="ConnectionLostException"/> (<see cref="ConnectionLostException.NotSent"/>)
    /// when it cannot, and before it makes a socket when the process's connections hold every descriptor its open-file
    /// limit leaves them (see <see cref="ConnectionDescriptors"/>): a process out of descriptors aborts.
    /// </summary>
    public static async Task<FrameConnection> ConnectAsync(string host, int port, FrameConnectionOptions options, CancellationToken cancellationToken = default)
    {
        var remote = $"{host}:{port}";

        // The connection gives its descriptor back when it fails or is disposed (Fail); until it exists, this does.
        var socket = ConnectionDescriptors.TryOpenOutgoing(host)
            ?? throw new ConnectionLostException($"cannot connect to {remote}: {ConnectionDescriptors.OutgoingRefusal()}") { NotSent = true };
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(options.ConnectTimeout);
            // A blocking connect on a pool thread, not Socket.ConnectAsync: the first asynchronous operation
            // turns a socket non-blocking for good, after which every blocking write of a caller is emulated over
            // epoll (a thread hop and two allocations per wait). The client loops read with MSG_DONTWAIT, which does
            // not need the socket non-blocking.
            await ConnectBlockingAsync(socket, host, port, timeout.Token).ConfigureAwait(false);
            if (options.TlsHost is { } tlsHost)
            {
                // The handshake blocks too (SslStream.AuthenticateAsClientAsync would turn the socket non-blocking).
                var tls = new TlsTransport(socket, new SslClientAuthenticationOptions
                {
                    TargetHost = tlsHost,
                    RemoteCertificateValidationCallback = options.CertificateValidation,
                });
                await AuthenticateBlockingAsync(tls, socket, host, timeout.Token).ConfigureAwait(false);
                return new FrameConnection(socket, tls.Ssl, tls, remote, options);
            }

            return new FrameConnection(socket, new NetworkStream(socket, ownsSocket: true), null, remote, options);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or IOException or System.Security.Authentication.AuthenticationException or ObjectDisposedException)
        {
            socket.Dispose();
            ConnectionDescriptors.Return();
            if (ex is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            throw new ConnectionLostException($"cannot connect to {remote}: {ex.Message}", ex);
        }
        catch
        {
            socket.Dispose();
            ConnectionDescriptors.Return();
            throw;
        }
    }

    /// <summary>
    /// Connects a fresh socket by blocking on a pool thread (see <see cref="ConnectAsync"/> for why), or on the caller's
    /// thread for a loopback address; a cancelled token closes the socket and throws <see cref="OperationCanceledException"/>.
    /// Shared with the load generator's RESP connections, so a connect storm is met the same way on both sides of a comparison.
    /// </summary>
    internal static async Task ConnectBlockingAsync(Socket socket, string host, int port, CancellationToken cancellationToken)
    {
        // Closing the socket is the only way to abort a blocking connect.
        using var abort = cancellationToken.Register(static s => ((Socket)s!).Dispose(), socket);
        try
        {
            if (IPAddress.TryParse(host, out var loopback) && IPAddress.IsLoopback(loopback))
            {
                // On loopback the handshake completes (or is refused) within connect() itself unless the listener's
                // backlog is full, so the caller waits about as long as the hop to a pool thread took: a fresh client's
                // connect went from 153-175 to 75-101 us at p50 (docs/benchmarks.md, "A function's cold start: the
                // count, and the connect"). A remote address keeps the pool thread: its handshake is a network round
                // trip, or a timeout for a host that is down.
                socket.Connect(new IPEndPoint(loopback, port));
                return;
            }

            await Task.Run(
                () =>
                {
                    if (IPAddress.TryParse(host, out var address))
                    {
                        socket.Connect(new IPEndPoint(address, port));
                    }
                    else
                    {
                        socket.Connect(host, port);
                    }
                },
                cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("connect timed out", ex, cancellationToken);
        }
    }

    /// <summary>
    /// A client's TLS handshake by blocking (on the caller's thread for a loopback address, as the connect; on a pool
    /// thread for any other); a cancelled token closes the socket and throws <see cref="OperationCanceledException"/>.
    /// A server that closes or breaks off the handshake throws (<see cref="IOException"/> or an authentication error).
    /// </summary>
    private static async Task AuthenticateBlockingAsync(TlsTransport tls, Socket socket, string host, CancellationToken cancellationToken)
    {
        using var abort = cancellationToken.Register(static s => ((Socket)s!).Dispose(), socket);
        try
        {
            if (IPAddress.TryParse(host, out var address) && IPAddress.IsLoopback(address))
            {
                tls.Authenticate();
                return;
            }

            await Task.Run(tls.Authenticate, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException or System.Security.Authentication.AuthenticationException && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("TLS handshake timed out", ex, cancellationToken);
        }
    }

    /// <summary>
    /// Sends one request and waits for its reply. The request body is <paramref name="head"/> then <paramref name="data"/>.
    /// When <paramref name="replyInto"/> is not empty and the reply is OK, its body is read into it (see <see cref="FrameReply.DataLength"/>).
    /// An OK body longer than <paramref name="replyInto"/> is read into an array of its own, all of it, or, with
    /// <paramref name="replyHead"/> (at most <paramref name="replyInto"/>'s length), its first <paramref name="replyHead"/>
    /// bytes into <paramref name="replyInto"/> and only the rest into that array: a reply whose head describes the bytes
    /// after it (an inline get's kind and size) then hands those bytes over as an array of their exact size.
    /// Cancelling ends the wait with <see cref="OperationCanceledException"/> at once, unless the reply is already being
    /// read (then it is returned): the server may still carry the request out, and its late reply is discarded.
    /// </summary>
    /// <remarks>
    /// Not an async method: when the frame is written without waiting (small frames are), the caller awaits the
    /// request's own pooled value-task source, and the request's end (its registration, its slot, its pooled object)
    /// is done when the caller takes the result (<see cref="Pending.GetResult"/>). One state machine less per request:
    /// its box, its execution-context capture and its continuation were a level of every get.
    /// </remarks>
    public ValueTask<FrameReply> SendAsync(
        Opcode opcode,
        FrameFlags flags,
        JobToken token,
        ReadOnlyMemory<byte> head,
        ReadOnlyMemory<byte> data = default,
        Memory<byte> replyInto = default,
        int replyHead = 0,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(replyHead);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(replyHead, replyInto.Length);
        if (_failure is not null)
        {
            return ValueTask.FromException<FrameReply>(NotSentFailure());
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<FrameReply>(cancellationToken);
        }

        return _inFlight.TryEnter()
            ? SendAdmittedAsync(opcode, flags, token, head, data, replyInto, replyHead, cancellationToken)
            : SendWhenAdmittedAsync(opcode, flags, token, head, data, replyInto, replyHead, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FrameReply> SendWhenAdmittedAsync(
        Opcode opcode, FrameFlags flags, JobToken token, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data, Memory<byte> replyInto, int replyHead, CancellationToken cancellationToken)
    {
        await _inFlight.EnterAsync(cancellationToken).ConfigureAwait(false);
        return await SendAdmittedAsync(opcode, flags, token, head, data, replyInto, replyHead, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The caller holds a slot of <see cref="_inFlight"/>; the request gives it back when it ends.</summary>
    private ValueTask<FrameReply> SendAdmittedAsync(
        Opcode opcode, FrameFlags flags, JobToken token, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data, Memory<byte> replyInto, int replyHead, CancellationToken cancellationToken)
    {
        var pending = RentPending();
        pending.Destination = replyInto;
        pending.DestinationHead = replyHead;
        pending.CancelToken = cancellationToken;
        pending.Opcode = opcode;
        if (!Enlist(pending))
        {
            ReturnPending(pending);
            _inFlight.Exit();
            return ValueTask.FromException<FrameReply>(NotSentFailure());
        }

        // After Enlist (a compare-and-swap, or the table's lock that HasWork takes): the watchdog runs while it is out.
        _loops.Watch();

        ValueTask write;
        try
        {
            write = WriteFrameAsync(new FrameHeader(opcode, flags, Status.Ok, head.Length + data.Length, pending.Id, token), head, data);
        }
        catch (Exception ex)
        {
            write = ValueTask.FromException(ex);
        }

        if (!write.IsCompletedSuccessfully)
        {
            return AfterWriteAsync(pending, write, cancellationToken);
        }

        Watch(pending, cancellationToken);
        return pending.Task;
    }

    /// <summary>A frame whose write did not finish at once (a large frame, or another writer held the socket).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FrameReply> AfterWriteAsync(Pending pending, ValueTask write, CancellationToken cancellationToken)
    {
        try
        {
            await write.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A pending object goes back to the pool only when nothing can complete it any more: it is taken out of the
            // table here before anyone else took it.
            if (pending.TryTake(pending.Id))
            {
                Untable(pending);
                ReturnPending(pending);
                _inFlight.Exit();
            }
            else
            {
                // The write failed, yet the reader took the request (its reply is arriving) or a failure did: wait
                // until it is completed, so the reader is no longer writing into replyInto when the caller gets it back.
                // Taking the result ends the request (its slot, its object).
                try
                {
                    await pending.Task.ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // The connection's failure is the news; it is thrown below.
                }
            }

            if (ex is not (IOException or SocketException or ObjectDisposedException))
            {
                throw;
            }

            Fail(ex);
            throw _failure as ConnectionLostException ?? new ConnectionLostException($"connection to {Remote} lost: {ex.Message}", ex);
        }

        Watch(pending, cancellationToken);
        return await pending.Task.ConfigureAwait(false);
    }

    /// <summary>
    /// Registers the caller's token for a request that is out: nothing for a token that cannot be cancelled, nor per
    /// request for the token this connection shares (see <see cref="ShareCancellation"/>).
    /// </summary>
    private void Watch(Pending pending, CancellationToken cancellationToken)
    {
        if (cancellationToken.CanBeCanceled && !ShareCancellation(pending, cancellationToken))
        {
            pending.Registration = cancellationToken.UnsafeRegister(CancelPendingCallback, pending);
        }
    }

    /// <summary>
    /// The caller took the request's result: its registration goes (waiting for a callback that runs), then its
    /// object and its slot. Called once per request, from <see cref="Pending.GetResult"/>.
    /// </summary>
    private void EndRequest(Pending pending)
    {
        pending.Registration.Dispose();
        ReturnPending(pending);
        _inFlight.Exit();
    }

    private void EndUnknownFailure(Pending pending)
    {
        pending.Registration.Dispose();
        pending.Registration = default;
        _inFlight.Exit();
    }

    /// <summary>The request failed with the connection: the exception its caller gets.</summary>
    private ConnectionLostException EndLostRequest(Pending pending, Exception cause)
    {
        pending.Registration.Dispose();
        pending.Registration = default;
        if (pending.TryTake(pending.Id))
        {
            Untable(pending);
            ReturnPending(pending);
        }

        _inFlight.Exit();
        Fail(cause);
        return _failure as ConnectionLostException ?? new ConnectionLostException($"connection to {Remote} lost: {cause.Message}", cause);
    }

    private ConnectionLostException NotSentFailure()
    {
        var failure = _failure!;
        return new ConnectionLostException(failure.Message, failure) { NotSent = true };
    }

    /// <summary>
    /// Gives <paramref name="pending"/> a fresh request id and puts it in the table; false when the connection has
    /// failed (then the request is not in the table and was never sent).
    /// </summary>
    private bool Enlist(Pending pending)
    {
        var id = Interlocked.Increment(ref _nextRequestId);
        if (id == 0)
        {
            // 0 marks a request that is in no table (Pending.Key): after 2^32 requests the ids go round without it.
            id = Interlocked.Increment(ref _nextRequestId);
        }

        pending.Id = id;
        pending.Started = _loops.Now;
        pending.Key = id;
        if (Interlocked.CompareExchange(ref _first, pending, null) is null)
        {
            // Fail sets the failure before it empties the table, and this looks after entering it: either Fail finds
            // the request, or this finds the failure and takes the request back (unless Fail took it first: then it
            // completes the request with the failure, as for any request in flight).
            if (_failure is not null && pending.TryTake(id))
            {
                Untable(pending);
                return false;
            }

            return true;
        }

        lock (_pendingLock)
        {
            if (_failure is not null)
            {
                pending.Key = 0;
                return false;
            }

            if (_pending.Count == 0 || _pendingSince == 0)
            {
                // No older request is in the dictionary: this one's start bounds them all (see NeedsCheck).
                Volatile.Write(ref _pendingSince, pending.Started);
            }

            _pending[id] = pending;
        }

        return true;
    }

    /// <summary>Takes the request with this id out of the table (the reply to it has come), or null when none is waiting.</summary>
    private Pending? TakeById(uint id)
    {
        var first = Volatile.Read(ref _first);
        if (first is not null && Volatile.Read(ref first.Key) == id && first.TryTake(id))
        {
            Interlocked.CompareExchange(ref _first, null, first);
            return first;
        }

        Pending? pending;
        lock (_pendingLock)
        {
            if (_pending.Count == 0 || !_pending.Remove(id, out pending))
            {
                return null;
            }
        }

        return pending.TryTake(id) ? pending : null;
    }

    /// <summary>Removes a request its taker took (<see cref="Pending.TryTake"/>) from where the table holds it.</summary>
    private void Untable(Pending pending)
    {
        if (Interlocked.CompareExchange(ref _first, null, pending) == pending)
        {
            return;
        }

        lock (_pendingLock)
        {
            _pending.Remove(pending.Id);
        }
    }

    /// <summary>
    /// Every request in the table, each with the id it was in the table under (read before its other fields, so a
    /// request that ends and is reused meanwhile is not taken by its old id); under <see cref="_pendingLock"/>.
    /// </summary>
    private void Snapshot(List<(Pending Pending, uint Id)> into)
    {
        if (Volatile.Read(ref _first) is { } first && Volatile.Read(ref first.Key) is var key and not 0)
        {
            into.Add((first, key));
        }

        foreach (var (id, pending) in _pending)
        {
            into.Add((pending, id));
        }
    }

    private static readonly Action<object?, CancellationToken> CancelPendingCallback =
        static (state, token) => ((Pending)state!).Owner.CancelPending((Pending)state!, token);

    private static readonly Action<object?, CancellationToken> CancelSharedCallback =
        static (state, token) => ((FrameConnection)state!).CancelAll(token);

    // The first cancellable token a request came with: registered once for the connection, so the requests that come
    // with it again (a caller's one token for all its work, the bench's run token) register nothing each. A
    // registration per request on one token shared by thousands of connections took that token's lock twice per request.
    private const int NotShared = 0, Sharing = 1, Shared = 2;
    private int _sharing;
    private CancellationToken _sharedToken;
    private CancellationTokenRegistration _sharedRegistration;

    /// <summary>
    /// True when <paramref name="token"/> is the connection's shared token (the first to come makes itself that
    /// token), so the request needs no registration of its own. The request is in the table with its token already:
    /// a cancellation from now on finds it there (<see cref="CancelAll"/>), and one that came earlier is seen here.
    /// </summary>
    private bool ShareCancellation(Pending pending, CancellationToken token)
    {
        if (Volatile.Read(ref _sharing) == NotShared && Interlocked.CompareExchange(ref _sharing, Sharing, NotShared) == NotShared)
        {
            _sharedToken = token;
            Volatile.Write(ref _sharing, Shared);
            var registration = token.UnsafeRegister(CancelSharedCallback, this);
            var kept = false;
            lock (_pendingLock)
            {
                // A failed connection has let go of its registration already (Fail): this one must not outlive it.
                if (_failure is null)
                {
                    _sharedRegistration = registration;
                    kept = true;
                }
            }

            if (!kept)
            {
                registration.Unregister();
            }
        }

        if (Volatile.Read(ref _sharing) != Shared || !_sharedToken.Equals(token))
        {
            return false;
        }

        if (token.IsCancellationRequested)
        {
            CancelPending(pending, token);
        }

        return true;
    }

    /// <summary>The shared token fired: every request in the table that came with it fails, as in <see cref="CancelPending"/>.</summary>
    private void CancelAll(CancellationToken token)
    {
        var all = new List<(Pending Pending, uint Id)>();
        lock (_pendingLock)
        {
            Snapshot(all);
        }

        foreach (var (pending, id) in all)
        {
            if (pending.CancelToken.Equals(token) && pending.TryTake(id))
            {
                Untable(pending);
                pending.TrySetException(new OperationCanceledException(token));
            }
        }
    }

    /// <summary>
    /// A caller's token fired while it waited for its reply. A request the reader has not taken yet leaves the table
    /// and fails at once; its reply, should it come, is skipped like any reply nobody waits for. A request the reader
    /// has taken is left to it: it may be reading the body into the caller's buffer, which must not be written once
    /// the caller has it back, and the reply that is arriving completes the request moments later.
    /// </summary>
    private void CancelPending(Pending pending, CancellationToken token)
    {
        if (!pending.TryTake(pending.Id))
        {
            return;
        }

        Untable(pending);
        pending.TrySetException(new OperationCanceledException(token));
    }

    /// <summary>
    /// Fails the requests older than the request timeout, like a cancellation: those the reader is not already
    /// completing leave the table and get <see cref="RequestTimeoutException"/>; their late replies are skipped.
    /// </summary>
    private void FailLateRequests()
    {
        var now = _loops.Now;
        var all = new List<(Pending Pending, uint Id)>();
        lock (_pendingLock)
        {
            Snapshot(all);
        }

        foreach (var (pending, id) in all)
        {
            if (Elapsed(Volatile.Read(ref pending.Started), now) < _options.RequestTimeout || !pending.TryTake(id))
            {
                continue;
            }

            Untable(pending);
            pending.TrySetException(new RequestTimeoutException(
                $"{Remote} did not answer {pending.Opcode} within {_options.RequestTimeout.TotalSeconds:0.###} s (the server is unresponsive or overloaded)")
            {
                Remote = Remote,
                Opcode = pending.Opcode,
            });
        }
    }

    private Pending RentPending()
    {
        if (Interlocked.Exchange(ref _sparePending, null) is { } spare)
        {
            return spare;
        }

        lock (_pendingLock)
        {
            return _pendingPool.TryPop(out var pooled) ? pooled : new Pending(this);
        }
    }

    private void ReturnPending(Pending pending)
    {
        pending.Reset();
        if (Interlocked.CompareExchange(ref _sparePending, pending, null) is null)
        {
            return;
        }

        lock (_pendingLock)
        {
            if (_pendingPool.Count < _options.MaxInFlight)
            {
                _pendingPool.Push(pending);
            }
        }
    }

    /// <summary>Frames up to this size are gathered and written together when callers send at the same time.</summary>
    private const int GatherLimit = 16 << 10;

    private ValueTask WriteFrameAsync(FrameHeader header, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data)
    {
        var total = FrameHeader.Size + head.Length + data.Length;
        if (total > GatherLimit)
        {
            return WriteLargeFrameAsync(header, head, data);
        }

        // Small frames are appended to a shared buffer; the caller that finds no flush under way writes the
        // buffer, and frames added meanwhile go out with its next write: one system call for many requests.
        lock (_gatherLock)
        {
            if (_gathered.Length - _gatheredLength < total)
            {
                Array.Resize(ref _gathered, Math.Max(_gathered.Length * 2, _gatheredLength + total));
            }

            var target = _gathered.AsSpan(_gatheredLength);
            header.Write(target);
            head.Span.CopyTo(target[FrameHeader.Size..]);
            data.Span.CopyTo(target[(FrameHeader.Size + head.Length)..]);
            _gatheredLength += total;
            if (_flushing)
            {
                return ValueTask.CompletedTask;
            }

            // A caller continuing on the reader thread while more replies wait in the read buffer: the reader
            // writes everything gathered once it has run them all, one write for the whole burst. The thread-static is
            // read only while this connection's reader defers (rarely, at one request in flight per connection).
            if (_readerDeferring && t_deferringSlot is { } deferring && deferring == _slot)
            {
                return ValueTask.CompletedTask;
            }

            _flushing = true;
        }

        return FlushGatheredAsync();
    }

    /// <summary>Set on the reader thread while it completes a reply and more replies are already buffered.</summary>
    [ThreadStatic]
    private static ReaderSlot? t_deferringSlot;

    /// <summary>
    /// True while this connection's reader completes a reply with <see cref="t_deferringSlot"/> set. Written and read
    /// by that thread in its own order, so it sees its own mark; another thread's stale read only means that thread
    /// does not defer, which is right for it. A thread-static access per reply and per send (three per get) showed in
    /// the fan-in profile; a field of the connection's own is a plain read.
    /// </summary>
    private volatile bool _readerDeferring;

    /// <summary>Writes what callers gathered while the reader deferred, unless a flush is under way.</summary>
    private void FlushDeferred()
    {
        lock (_gatherLock)
        {
            if (_flushing || _gatheredLength == 0)
            {
                return;
            }

            _flushing = true;
        }

        var flush = FlushGatheredAsync();
        if (!flush.IsCompletedSuccessfully)
        {
            _ = ObserveFlushAsync(flush);
        }
    }

    private async Task ObserveFlushAsync(ValueTask flush)
    {
        try
        {
            await flush.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The gathered frames' callers wait for replies that will not come: fail them all.
            Fail(ex);
        }
    }

    private ValueTask FlushGatheredAsync()
    {
        // Small frames are written synchronously: they fit the socket buffer, so the write does not wait, and a
        // socket that only ever sees blocking calls stays in blocking mode (see ConnectBlockingAsync).
        if (!_writeLock.TryEnter())
        {
            return FlushGatheredSlowAsync();
        }

        try
        {
            WriteGathered();
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
        finally
        {
            _writeLock.Exit();
        }

        return ValueTask.CompletedTask;
    }

    private async ValueTask FlushGatheredSlowAsync()
    {
        await _writeLock.EnterAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            WriteGathered();
        }
        finally
        {
            _writeLock.Exit();
        }
    }

    /// <summary>Writes gathered frames until none are left; the caller holds the write lock.</summary>
    private void WriteGathered()
    {
        try
        {
            while (true)
            {
                byte[] buffer;
                int length;
                lock (_gatherLock)
                {
                    if (_gatheredLength == 0)
                    {
                        _flushing = false;
                        return;
                    }

                    (buffer, _gathered, _spare) = (_gathered, _spare, _gathered);
                    length = _gatheredLength;
                    _gatheredLength = 0;
                    if (_gathered.Length < buffer.Length)
                    {
                        _gathered = new byte[buffer.Length];
                    }
                }

                _stream.Write(buffer, 0, length);
            }
        }
        catch
        {
            lock (_gatherLock)
            {
                _flushing = false;
            }

            throw;
        }
    }

    /// <summary>
    /// Writes a frame over the gather limit. On a plain connection the head and the body go out with one gathered,
    /// non-blocking system call when the socket takes them whole (a 64 KiB write does on loopback), on the caller's
    /// thread: no second send, no asynchronous socket operation (whose first use set up the runtime's asynchronous
    /// machinery for the socket, made it non-blocking for good and, when the socket buffer was full, finished the
    /// write on a pool thread), and the node is woken once for the whole frame. What the socket does not take now is
    /// written asynchronously, as before.
    /// </summary>
    private ValueTask WriteLargeFrameAsync(FrameHeader header, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data) =>
        _writeLock.TryEnter() ? WriteLargeFrameLockedAsync(header, head, data) : WriteLargeFrameWhenFreeAsync(header, head, data);

    private async ValueTask WriteLargeFrameWhenFreeAsync(FrameHeader header, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data)
    {
        await _writeLock.EnterAsync(CancellationToken.None).ConfigureAwait(false);
        await WriteLargeFrameLockedAsync(header, head, data).ConfigureAwait(false);
    }

    /// <summary>Writes the frame; the caller holds the write lock, which this releases once the frame is written.</summary>
    private ValueTask WriteLargeFrameLockedAsync(FrameHeader header, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> data)
    {
        byte[] buffer;
        int prefix;
        var sent = 0;
        try
        {
            (buffer, prefix) = WriteLargePrefix(header, head);
            if (_tls is null)
            {
                sent = Linux.SendNow(_socket.SafeHandle, buffer.AsSpan(0, prefix), data.Span);
                Interlocked.Increment(ref _gatheredLargeWrites);
                if (sent == prefix + data.Length)
                {
                    _writeLock.Exit();
                    return ValueTask.CompletedTask;
                }
            }
        }
        catch (Exception ex)
        {
            _writeLock.Exit();
            return ValueTask.FromException(ex);
        }

        // The rest (all of it on TLS): the unsent part of the head, then of the body.
        return WriteLargeRestAsync(buffer, prefix, Math.Max(sent, 0), data);
    }

    /// <summary>
    /// Frames over the gather limit whose head and body were sent with one gathered system call (tests): all of the frame
    /// when the socket had room for it (a fresh loopback socket usually has), else the start, the rest written after.
    /// </summary>
    internal long GatheredLargeWrites => Interlocked.Read(ref _gatheredLargeWrites);

    private long _gatheredLargeWrites;

    // The header and head of a frame over the gather limit (kept up to 64 KiB), used under the write lock.
    private byte[] _writeBuffer = [];

    private (byte[] Buffer, int Length) WriteLargePrefix(FrameHeader header, ReadOnlyMemory<byte> head)
    {
        var prefix = FrameHeader.Size + head.Length;
        var buffer = prefix <= _writeBuffer.Length ? _writeBuffer : prefix <= 64 << 10 ? _writeBuffer = new byte[Math.Max(prefix, 1 << 10)] : new byte[prefix];
        header.Write(buffer);
        head.Span.CopyTo(buffer.AsSpan(FrameHeader.Size));
        return (buffer, prefix);
    }

    private async ValueTask WriteLargeRestAsync(byte[] buffer, int prefix, int sent, ReadOnlyMemory<byte> data)
    {
        try
        {
            if (sent < prefix)
            {
                await _stream.WriteAsync(buffer.AsMemory(sent, prefix - sent)).ConfigureAwait(false);
                sent = prefix;
            }

            await _stream.WriteAsync(data[(sent - prefix)..]).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Exit();
        }
    }

    /// <summary>
    /// One reader thread's claim on the stream. Replies complete their callers inline on the reader thread
    /// (a hop to the thread pool cost ~50 us per request on two cores); should a caller's continuation block,
    /// the watchdog marks the slot abandoned and starts a new reader, so the connection never stalls.
    /// </summary>
    private sealed class ReaderSlot
    {
        public const int Reading = 0;
        public const int InCallback = 1;
        public const int Abandoned = 2;
        public int State;
        public long CallbackStarted;
    }

    private ReaderSlot _slot = new();
    private static readonly TimeSpan CallbackBudget = TimeSpan.FromMilliseconds(100);

    // Set while a CheckReader the loops' tick asked for waits on the thread pool, so a slow pool gets one, not one a tick.
    private int _checkQueued;

    // No request in the table started before this (the loops' clock, ClientLoops.Now), or 0: set under the table's lock by a request
    // that finds the table empty (or the bound unset), made exact by NeedsCheck's walk. Requests taken out of the
    // table leave it as it was, so it is only ever too old: the tick then walks the table once and corrects it.
    private long _pendingSince;

    /// <summary>
    /// The loops' tick (every <see cref="CallbackBudget"/>), on their timer: only looks, under the request table's
    /// lock, whether a request is late or a callback overran; the work itself (failing callers, whose continuations
    /// may run long, or handing the socket to another loop) goes to the thread pool, so one connection never holds up
    /// the tick of the others.
    /// </summary>
    void IClientLoopConnection.OnTick()
    {
        if (_failure is not null || Volatile.Read(ref _checkQueued) != 0 || !NeedsCheck())
        {
            return;
        }

        if (Interlocked.Exchange(ref _checkQueued, 1) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(
                static connection =>
                {
                    Volatile.Write(ref connection._checkQueued, 0);
                    connection.CheckReader();
                },
                this,
                preferLocal: false);
        }
    }

    /// <summary>
    /// Whether the loops' timer has anything to watch here: a request in the table, a callback running, a check queued.
    /// Without <paramref name="exact"/> the table's dictionary is read without its lock (the tick's first look, at
    /// every connection ten times a second); with it under the lock, for the look that decides to stop the timer (see
    /// <see cref="ClientLoops.Watch"/>).
    /// </summary>
    bool IClientLoopConnection.HasWork(bool exact)
    {
        if (Volatile.Read(ref _first) is not null || Volatile.Read(ref _checkQueued) != 0 ||
            Volatile.Read(ref Volatile.Read(ref _slot).State) == ReaderSlot.InCallback)
        {
            return true;
        }

        if (!exact)
        {
            return _pending.Count != 0;
        }

        lock (_pendingLock)
        {
            return _pending.Count != 0;
        }
    }

    /// <summary>
    /// Time between two readings of <see cref="Environment.TickCount64"/>. The request path reads that coarse clock
    /// (milliseconds, a plain memory read in the vDSO) rather than <see cref="Stopwatch"/>: a precise reading cost
    /// ~120-160 ns here (a paravirtual clock), twice per request, and the bounds it is compared with are 100 ms (a
    /// callback) and seconds (the request timeout).
    /// </summary>
    private static TimeSpan Elapsed(long since, long now) => TimeSpan.FromMilliseconds(now - since);

    private bool NeedsCheck()
    {
        var slot = Volatile.Read(ref _slot);
        if (Volatile.Read(ref slot.State) == ReaderSlot.InCallback &&
            Elapsed(Volatile.Read(ref slot.CallbackStarted), _loops.Now) >= CallbackBudget)
        {
            return true;
        }

        if (_options.RequestTimeout <= TimeSpan.Zero || _options.RequestTimeout == Timeout.InfiniteTimeSpan)
        {
            return false;
        }

        // The table is looked at only when its oldest request may be late: at 10,000 connections, taking every
        // connection's lock and walking its table ten times a second was 9 % of a fan-in client's CPU. The first
        // request's start is read as it is (it may be one that just ended: then the walk finds nothing late).
        var now = _loops.Now;
        if (Volatile.Read(ref _first) is { } first && Elapsed(Volatile.Read(ref first.Started), now) >= _options.RequestTimeout)
        {
            return true;
        }

        var since = Volatile.Read(ref _pendingSince);
        if (since == 0 || Elapsed(since, now) < _options.RequestTimeout)
        {
            return false;
        }

        lock (_pendingLock)
        {
            var oldest = long.MaxValue;
            foreach (var pending in _pending.Values)
            {
                if (Elapsed(pending.Started, now) >= _options.RequestTimeout)
                {
                    return true;
                }

                oldest = Math.Min(oldest, pending.Started);
            }

            // None is late: the bound becomes exact again (0 when the table is empty).
            Volatile.Write(ref _pendingSince, oldest == long.MaxValue ? 0 : oldest);
        }

        return false;
    }

    private void CheckReader()
    {
        if (_options.RequestTimeout > TimeSpan.Zero && _options.RequestTimeout != Timeout.InfiniteTimeSpan)
        {
            FailLateRequests();
        }

        var slot = Volatile.Read(ref _slot);
        if (_failure is not null || Volatile.Read(ref slot.State) != ReaderSlot.InCallback)
        {
            return;
        }

        if (Elapsed(Volatile.Read(ref slot.CallbackStarted), _loops.Now) < CallbackBudget ||
            Interlocked.CompareExchange(ref slot.State, ReaderSlot.Abandoned, ReaderSlot.InCallback) != ReaderSlot.InCallback)
        {
            return;
        }

        var fresh = new ReaderSlot();
        lock (_gatherLock)
        {
            Volatile.Write(ref _slot, fresh);
        }

        // Any loop (one is added if all are blocked) carries on where the blocked one stopped; the blocked one
        // leaves the reading state alone when it returns (its slot is no longer the connection's).
        // The blocked loop may have read more replies into the buffer than it ran (or, on TLS, left decrypted ones in
        // its transport): they are not in the socket, so epoll would never report them, and their callers would wait
        // out the request timeout. Run it at once.
        Interlocked.CompareExchange(ref _readerState, Idle, LoopReading);
        RunSoon();

        // Frames the blocked continuation deferred (it may be waiting for their replies) go out now.
        FlushDeferred();
    }

    /// <summary>
    /// The reader's own write of deferred frames, watched like a callback: a write that blocks (the server, its
    /// replies unread, stops reading) is handed over to another loop, which drains the replies.
    /// </summary>
    private void FlushDeferredWatched(ReaderSlot slot)
    {
        EnterCallback(slot);
        FlushDeferred();
        LeaveCallback(slot);
    }

    private void Complete(ReaderSlot slot, Pending pending, FrameReply reply, bool moreBuffered)
    {
        EnterCallback(slot);
        if (moreBuffered)
        {
            t_deferringSlot = slot;
            _readerDeferring = true;
            try
            {
                pending.TrySetResult(reply);
            }
            finally
            {
                _readerDeferring = false;
                t_deferringSlot = null;
            }
        }
        else
        {
            pending.TrySetResult(reply);
        }

        LeaveCallback(slot);
    }

    /// <summary>From here until <see cref="LeaveCallback"/> the watchdog may hand the socket to a new reader.</summary>
    private void EnterCallback(ReaderSlot slot)
    {
        Volatile.Write(ref slot.CallbackStarted, _loops.Now);
        Volatile.Write(ref slot.State, ReaderSlot.InCallback);
    }

    /// <summary>Back to reading, unless the watchdog handed the socket over meanwhile (then this thread stops).</summary>
    private static void LeaveCallback(ReaderSlot slot)
    {
        if (Interlocked.CompareExchange(ref slot.State, ReaderSlot.Reading, ReaderSlot.InCallback) != ReaderSlot.InCallback)
        {
            throw new OperationCanceledException("reader handed over");
        }
    }

    // The loops' read state: what has arrived and not been parsed, and the reply whose body is
    // arriving (into the caller's buffer, or an array of its own), or the bytes of a reply nobody waits for.
    private readonly byte[]? _in;
    private int _inStart;
    private int _inEnd;
    private Pending? _body;
    private byte[]? _bodyArray;
    private Status _bodyStatus;
    private int _bodyLength;
    private int _bodyDone;

    // Of a body read into an array of its own, how many first bytes go into the caller's buffer instead (its head).
    private int _bodyHead;
    private long _skip;

    // The last receive of this wake-up came back short: the socket had nothing more at that moment, so asking again
    // would only return EAGAIN (a system call per reply); the edge-triggered epoll reports what arrives next.
    private bool _drained;

    // Who may complete the reply whose body is being read (_body) when the connection fails: the loop reading it, or,
    // when no loop is (the connection waits in epoll for the rest of a large body), Fail itself. A failure found by a
    // writer or a caller (Fail from another thread) removes the connection from epoll, so no loop would ever finish
    // that reply: its caller waited forever.
    private const int Idle = 0, LoopReading = 1, Settled = 2;
    private int _readerState;

    /// <summary>Bytes one wake-up reads at most before the connection waits for another (kicked), so a large reply cannot starve the others.</summary>
    private const int ReadBudget = 4 << 20;

    // Set by every event for the connection, cleared by the loop that reads it before it reads: an event that finds
    // another loop reading leaves it here, and that loop reads again before it lets go (edge-triggered, no event would
    // come again for that input).
    private int _readable;

    // Set for good by an event that says the peer closed: reads then go on past a short one, to the end of the stream.
    private volatile bool _hungUp;

    /// <summary>
    /// Called by a client loop when data has arrived: reads and completes what it can without
    /// waiting, and writes what callers gathered meanwhile; another loop already reading it reads this input too.
    /// </summary>
    void IClientLoopConnection.OnReadable(bool hungUp)
    {
        if (hungUp)
        {
            _hungUp = true;
        }

        // The event is recorded before the reading state is tried; a reader lets go before it looks at the record (each
        // side with a full fence), so one of the two always sees the other: the input is never left unread.
        Interlocked.Exchange(ref _readable, 1);
        while (true)
        {
            var slot = Volatile.Read(ref _slot);
            if (Interlocked.CompareExchange(ref _readerState, LoopReading, Idle) != Idle)
            {
                // Another loop reads it (and will see the event), or it failed and settled: nothing is left to read.
                return;
            }

            Interlocked.Exchange(ref _readable, 0);
            if (!ReadOnce(slot))
            {
                return;
            }

            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref _readable) == 0)
            {
                return;
            }
        }
    }

    /// <summary>One wake-up's reading; true when it let go of the connection with nothing left for it to do.</summary>
    private bool ReadOnce(ReaderSlot slot)
    {
        var released = false;
        try
        {
            if (_failure is not null || !ReadAvailable(slot))
            {
                return false;
            }

            // Before waiting: write what callers gathered while replies were being run.
            if (Volatile.Read(ref _gatheredLength) > 0)
            {
                FlushDeferredWatched(slot);
            }

            // Let go first: the next event may come on another loop at once. Input left unread (replies in the buffer,
            // or the socket when the read budget ran out) is run on another wake-up, which must not wait for more.
            var runNow = CanRunWithoutInput() || !_drained;
            released = true;
            LeaveReading(slot);
            if (runNow)
            {
                RunSoon();
                return false;
            }

            return true;
        }
        catch (OperationCanceledException) when (Volatile.Read(ref slot.State) == ReaderSlot.Abandoned)
        {
            // A callback blocked and the watchdog handed the connection to another loop, which owns it now.
            return false;
        }
        catch (Exception ex)
        {
            // A reply broken off in the middle of its body is failed as this loop leaves (LeaveReading).
            Fail(ex);
            return false;
        }
        finally
        {
            if (!released)
            {
                LeaveReading(slot);
            }
        }
    }

    /// <summary>
    /// The loop is done with the connection for this wake-up; if it failed meanwhile, its half-read reply is failed now.
    /// A loop the watchdog replaced (its callback blocked) no longer owns the reading state and leaves it alone.
    /// </summary>
    private void LeaveReading(ReaderSlot slot)
    {
        if (Volatile.Read(ref _slot) != slot)
        {
            return;
        }

        Volatile.Write(ref _readerState, Idle);
        if (_failure is not null)
        {
            SettleBody();
        }
    }

    /// <summary>
    /// Fails the reply whose body was being read, once no loop is reading it (the loop that is calls this again when
    /// it leaves), so its caller learns of the failure and no loop writes into its buffer afterwards.
    /// </summary>
    private void SettleBody()
    {
        if (Interlocked.CompareExchange(ref _readerState, Settled, Idle) != Idle)
        {
            return;
        }

        var reading = _body;
        _body = null;
        reading?.TrySetException(_failure!);
    }

    /// <summary>
    /// Has a loop run the connection at once (unless it is closed), for input it holds that epoll would not report:
    /// replies already in its buffer, or bytes left in the socket when a read budget ran out.
    /// </summary>
    private void RunSoon()
    {
        if (_failure is null)
        {
            _loops!.Kick(_loopId);
        }
    }

    /// <summary>True when the buffer holds input that can be run without reading more (a whole reply, or body bytes).</summary>
    private bool CanRunWithoutInput() =>
        _inEnd > _inStart && (_skip > 0 || _body is not null || HasBufferedFrame());

    /// <summary>
    /// Parses and completes every reply that has arrived; true when the connection should wait for more,
    /// false when it failed or the watchdog took it over.
    /// </summary>
    private bool ReadAvailable(ReaderSlot slot)
    {
        var input = _in!;
        var received = 0;
        _drained = false;
        _tls?.BeginTurn();
        while (received < ReadBudget)
        {
            if (_failure is not null)
            {
                return false;
            }

            var buffered = _inEnd - _inStart;
            if (_skip > 0)
            {
                if (buffered > 0)
                {
                    var n = (int)Math.Min(_skip, buffered);
                    _inStart += n;
                    _skip -= n;
                    continue;
                }
            }
            else if (_body is not null)
            {
                var target = _bodyArray is null ? _body.Destination.Span[_bodyDone.._bodyLength]
                    : _bodyDone < _bodyHead ? _body.Destination.Span[_bodyDone.._bodyHead]
                    : _bodyArray.AsSpan(_bodyDone - _bodyHead);
                if (target.Length > 0 && buffered > 0)
                {
                    var n = Math.Min(buffered, target.Length);
                    input.AsSpan(_inStart, n).CopyTo(target);
                    _inStart += n;
                    _bodyDone += n;
                }
                else if (target.Length >= input.Length / 2)
                {
                    // A large body goes straight from the socket into its place.
                    var n = ReceiveInto(target);
                    if (n < 0)
                    {
                        return true;
                    }

                    received += n;
                    _bodyDone += n;
                }
                else if (target.Length > 0)
                {
                    var n = Fill();
                    if (n < 0)
                    {
                        return true;
                    }

                    received += n;
                    continue;
                }

                if (_bodyDone == _bodyLength)
                {
                    var pending = _body;
                    var reply = _bodyArray is null
                        ? new FrameReply(_bodyStatus, [], _bodyLength)
                        : new FrameReply(_bodyStatus, _bodyArray, _bodyLength);
                    _body = null;
                    _bodyArray = null;
                    _bodyHead = 0;
                    Complete(slot, pending, reply, HasBufferedFrame());
                }

                continue;
            }
            else if (buffered >= FrameHeader.Size)
            {
                StartReply(input.AsSpan(_inStart, FrameHeader.Size));
                _inStart += FrameHeader.Size;
                continue;
            }

            var read = Fill();
            if (read < 0)
            {
                return true;
            }

            received += read;
        }

        return true;
    }

    /// <summary>Takes a reply's header: whose request it answers, and where its body goes.</summary>
    private void StartReply(ReadOnlySpan<byte> headerBytes)
    {
        var status = FrameHeader.TryRead(headerBytes, _options.Limits.MaxAnyBody, out var header);
        if (status != Status.Ok || !header.IsReply)
        {
            throw new ConnectionLostException($"bad reply frame from {Remote}: {status}");
        }

        var pending = TakeById(header.RequestId);
        if (pending is null)
        {
            _skip = header.BodyLength;
            return;
        }

        _body = pending;
        _bodyStatus = header.Status;
        _bodyLength = header.BodyLength;
        _bodyDone = 0;
        var buffered = header.Status == Status.Ok && !pending.Destination.IsEmpty;
        var direct = buffered && header.BodyLength <= pending.Destination.Length;

        // Longer than the buffer, which holds the head: the body is longer than the head too.
        _bodyHead = buffered && !direct ? pending.DestinationHead : 0;
        _bodyArray = direct ? null : header.BodyLength == 0 ? [] : new byte[header.BodyLength - _bodyHead];
    }

    /// <summary>Reads what has arrived into the input buffer: the count, or -1 when nothing has. The end of the stream throws.</summary>
    private int Fill()
    {
        var input = _in!;
        if (_inStart == _inEnd)
        {
            _inStart = _inEnd = 0;
        }
        else if (_inEnd == input.Length)
        {
            input.AsSpan(_inStart, _inEnd - _inStart).CopyTo(input);
            _inEnd -= _inStart;
            _inStart = 0;
        }

        var n = ReceiveInto(input.AsSpan(_inEnd));
        if (n > 0)
        {
            _inEnd += n;
        }

        return n;
    }

    private int ReceiveInto(Span<byte> destination)
    {
        if (_drained)
        {
            return -1;
        }

        int n;
        try
        {
            n = _tls is null ? Linux.ReceiveNow(_socket.SafeHandle, destination) : ReceiveTls(destination);
        }
        catch (ObjectDisposedException ex)
        {
            throw new ConnectionLostException($"connection to {Remote} closed", ex);
        }

        // Decrypted bytes short of the space say nothing of the socket: TLS reads until its transport would block.
        _drained = _tls is null ? n < destination.Length && !_hungUp : n < 0;
        if (n == 0)
        {
            throw new ConnectionLostException(_body is null && _skip == 0 && _inStart == _inEnd
                ? $"connection to {Remote} closed by the server"
                : $"connection to {Remote} closed by the server in the middle of a frame");
        }

        return n;
    }

    /// <summary>Decrypted bytes, -1 when the socket has nothing more now, 0 at its end; a broken record or handshake throws.</summary>
    private int ReceiveTls(Span<byte> destination)
    {
        var n = _tls!.Receive(destination, _hungUp, out var error);
        if (n > 0 || error == SocketError.Success)
        {
            return n;
        }

        if (error == SocketError.WouldBlock)
        {
            return -1;
        }

        throw new ConnectionLostException($"connection to {Remote} lost: {_tls.Error ?? error.ToString()}");
    }

    /// <summary>True when a whole reply (header and body) is already in the input buffer, so running it will not wait.</summary>
    private bool HasBufferedFrame()
    {
        var buffered = _inEnd - _inStart;
        if (buffered < FrameHeader.Size)
        {
            return false;
        }

        var length = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(_in.AsSpan(_inStart + 8));
        return length >= 0 && buffered - FrameHeader.Size >= length;
    }

    private void Fail(Exception cause)
    {
        var lost = cause as ConnectionLostException ?? new ConnectionLostException($"connection to {Remote} lost: {cause.Message}", cause);
        if (Interlocked.CompareExchange(ref _failure, lost, null) is null)
        {
            try
            {
                _loops.Remove(_loopId, _socket.Handle);
            }
            catch (ObjectDisposedException)
            {
            }

            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }

            _socket.Dispose();
            ConnectionDescriptors.Return();
        }

        var failed = new List<(Pending Pending, uint Id)>();
        CancellationTokenRegistration shared;
        lock (_pendingLock)
        {
            Snapshot(failed);
            shared = _sharedRegistration;
            _sharedRegistration = default;
        }

        // A long-lived token must not keep a closed connection reachable.
        shared.Unregister();

        foreach (var (pending, id) in failed)
        {
            if (pending.TryTake(id))
            {
                Untable(pending);
                pending.TrySetException(_failure!);
            }
        }

        // The reply a loop took out of the table is not in it: fail it too, unless a loop is reading it now.
        SettleBody();
    }

    public void Dispose()
    {
        Fail(new ConnectionLostException($"connection to {Remote} closed"));
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The awaitable of one request, pooled per connection (a TaskCompletionSource and its Task per request were
    /// most of what a request allocated). Completes inline on the reader thread; see <see cref="ReaderSlot"/>.
    /// Exactly one party completes it: whoever takes it out of the table of requests in flight (<see cref="TryTake"/>:
    /// the reader, a failure, the request timeout or the caller's cancellation). The caller taking the result ends the
    /// request (<see cref="EndRequest"/>): so nothing that may still complete it ever sees it reused.
    /// </summary>
    private sealed class Pending(FrameConnection owner) : IValueTaskSource<FrameReply>
    {
        private ManualResetValueTaskSourceCore<FrameReply> _core;
        private int _completed;

        /// <summary>The request id while the request is in the table of requests in flight, 0 once it was taken.</summary>
        public uint Key;

        /// <summary>When it was sent (<see cref="ClientLoops.Now"/>), for the request timeout.</summary>
        public long Started;

        public FrameConnection Owner { get; } = owner;

        /// <summary>The request id it is (or was) in the table under.</summary>
        public uint Id { get; set; }

        public Memory<byte> Destination { get; set; }

        /// <summary>How many first bytes of a body longer than <see cref="Destination"/> still go into it (see <see cref="SendAsync"/>).</summary>
        public int DestinationHead { get; set; }

        /// <summary>The caller's token, for a cancellation of the connection's shared token (<see cref="CancelAll"/>).</summary>
        public CancellationToken CancelToken { get; set; }

        /// <summary>The caller's token's registration of its own, if the request needed one.</summary>
        public CancellationTokenRegistration Registration { get; set; }

        public Opcode Opcode { get; set; }

        public ValueTask<FrameReply> Task => new(this, _core.Version);

        /// <summary>
        /// Takes the request out of the table, if it is still there under <paramref name="id"/>: true for the one
        /// party that then completes it. An id read earlier fails once the object was reused for another request.
        /// </summary>
        public bool TryTake(uint id) => id != 0 && Interlocked.CompareExchange(ref Key, 0, id) == id;

        public void TrySetResult(FrameReply reply)
        {
            if (Interlocked.Exchange(ref _completed, 1) == 0)
            {
                _core.SetResult(reply);
            }
        }

        public void TrySetException(Exception exception)
        {
            if (Interlocked.Exchange(ref _completed, 1) == 0)
            {
                _core.SetException(exception);
            }
        }

        public void Reset()
        {
            Destination = default;
            DestinationHead = 0;
            CancelToken = default;
            Registration = default;
            _core.Reset();
            Volatile.Write(ref _completed, 0);
        }

        public FrameReply GetResult(short token)
        {
            FrameReply reply;
            try
            {
                reply = _core.GetResult(token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or RequestTimeoutException)
            {
                // The canceller or the timeout took it out of the table, so nothing else refers to it now.
                Owner.EndRequest(this);
                throw;
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                throw Owner.EndLostRequest(this, ex);
            }
            catch (Exception)
            {
                // Nothing else completes a request; should it, the request still gives back its slot.
                Owner.EndUnknownFailure(this);
                throw;
            }

            Owner.EndRequest(this);
            return reply;
        }

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
