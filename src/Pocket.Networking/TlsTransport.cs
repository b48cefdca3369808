using System.Buffers;
using System.Net.Security;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Pocket.Networking;

/// <summary>
/// TLS under a <see cref="LoopConnection"/>, with no thread of its own: an <see cref="SslStream"/> over this in-memory
/// stream (the way Kestrel runs TLS over a duplex pipe). The connection's owner reads ciphertext from the non-blocking
/// socket and completes the stream's pending read with it; the TLS machinery's continuation runs inline on that thread
/// (the owner: a loop or the I/O pool), never on another, and never blocks. What the TLS stream writes (handshake
/// messages, encrypted replies) is appended here and sent by the owner's write path; what the socket does not take
/// waits here, counted in the connection's reply backlog. A peer that never finishes the handshake holds no thread:
/// the idle timeout closes it like any quiet connection.
/// A client's connection uses it too (<see cref="TlsTransport(Socket, SslClientAuthenticationOptions)"/>): its
/// handshake blocks the connecting caller (the socket stays blocking, see FrameConnection.ConnectAsync), then a client
/// loop reads and decrypts its replies with <see cref="Receive"/> as a server loop does, while callers' frames are
/// encrypted and written straight to the blocking socket under the connection's write lock (TLS lets one read and one
/// write run at once).
/// </summary>
internal sealed class TlsTransport : Stream, IValueTaskSource<int>
{
    // Ciphertext is read from the socket this much at a time (a TLS record is at most 16 KiB plus its overhead).
    private const int CipherChunk = 17 << 10;

    // Plaintext handed out per read of the TLS stream (at most one record's worth).
    private const int PlainChunk = 16 << 10;

    private readonly Socket _socket;
    private readonly SslStream _ssl;

    // Set for a client's transport: it reads with MSG_DONTWAIT (its socket stays blocking for callers' writes) and
    // writes through.
    private readonly SslClientAuthenticationOptions? _clientOptions;
    private ManualResetValueTaskSourceCore<int> _innerRead;
    private Memory<byte> _innerBuffer;
    private bool _innerPending;
    private Task? _handshake;
    private ValueTask<int> _read;
    private bool _reading;

    // The pending read of the TLS stream is a zero-byte one: it waits for data with no buffer, its own or the stream's.
    private bool _waiting;

    // Data has arrived since the last plaintext read (a zero-byte read completed): the next read takes a buffer.
    private bool _dataReady;
    private byte[]? _cipherIn;
    private int _cipherInStart;
    private int _cipherInEnd;
    private byte[]? _cipherOut;
    private int _cipherOutStart;
    private int _cipherOutEnd;
    private byte[]? _plain;
    private int _plainStart;
    private int _plainEnd;
    private bool _socketEnded;
    private bool _shortRead;

    public TlsTransport(Socket socket, SslServerAuthenticationOptions options)
    {
        _socket = socket;
        _ssl = new SslStream(this, leaveInnerStreamOpen: true);

        // Starts at once and waits (holding nothing but its state) for the client's hello: the owner brings it.
        _handshake = _ssl.AuthenticateAsServerAsync(options, CancellationToken.None);
    }

    /// <summary>
    /// A client's side over a connected, blocking socket; <see cref="Authenticate"/> does the handshake before a client
    /// loop reads it.
    /// </summary>
    public TlsTransport(Socket socket, SslClientAuthenticationOptions options)
    {
        _socket = socket;
        _clientOptions = options;
        _ssl = new SslStream(this, leaveInnerStreamOpen: true);
    }

    /// <summary>The TLS stream: a client writes its frames to it (encrypted and sent through to the socket).</summary>
    public SslStream Ssl => _ssl;

    /// <summary>
    /// A client's handshake, blocking the caller on the socket (a server that closes or fails it throws; closing the
    /// socket from another thread ends the wait). Before anything reads the transport with <see cref="Receive"/>.
    /// </summary>
    public void Authenticate() => _ssl.AuthenticateAsClient(_clientOptions!);

    /// <summary>Why the connection failed (a handshake or a TLS record that went wrong), once Receive returned an error.</summary>
    public string? Error { get; private set; }

    /// <summary>
    /// A new turn of the connection starts: the last short read says nothing about input that came since (its event
    /// may have been taken by a turn that ended early, with input left).
    /// </summary>
    public void BeginTurn() => _shortRead = false;

    /// <summary>Ciphertext waiting for the socket to take it.</summary>
    public int Pending => _cipherOutEnd - _cipherOutStart;

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    /// <summary>
    /// Decrypted bytes into <paramref name="destination"/>: more than 0 read; 0 with Success at the end of the stream;
    /// 0 with WouldBlock when the socket has nothing more now (a new epoll event comes with more); 0 with another error
    /// when the connection broke (<see cref="Error"/> says why when TLS failed).
    /// </summary>
    public int Receive(Span<byte> destination, bool hungUp, out SocketError error)
    {
        error = SocketError.Success;
        try
        {
            while (true)
            {
                if (_plainEnd > _plainStart)
                {
                    var n = Math.Min(destination.Length, _plainEnd - _plainStart);
                    _plain.AsSpan(_plainStart, n).CopyTo(destination);
                    _plainStart += n;
                    if (_plainStart == _plainEnd)
                    {
                        ReturnPlain();
                    }

                    return n;
                }

                if (_handshake is { } handshake)
                {
                    if (handshake.IsCompleted)
                    {
                        _handshake = null;
                        handshake.GetAwaiter().GetResult();
                        continue;
                    }
                }
                else if (!_reading)
                {
                    // An idle connection waits with a zero-byte read, which holds neither this transport's plaintext
                    // buffer nor the TLS stream's record buffer; they are taken once ciphertext has come.
                    _waiting = !_dataReady;
                    _dataReady = false;
                    if (!_waiting)
                    {
                        _plain ??= ArrayPool<byte>.Shared.Rent(PlainChunk);
                    }

                    _plainStart = _plainEnd = 0;
                    _read = _ssl.ReadAsync(_waiting ? Memory<byte>.Empty : _plain);
                    _reading = true;
                    continue;
                }
                else if (_read.IsCompleted)
                {
                    _reading = false;
                    var read = _read.GetAwaiter().GetResult();
                    _read = default;
                    if (_waiting)
                    {
                        // Something to read now (or the end of the stream, which the next read returns).
                        _waiting = false;
                        _dataReady = true;
                        continue;
                    }

                    if (read == 0)
                    {
                        ReturnPlain();
                        return 0;
                    }

                    _plainEnd = read;
                    continue;
                }

                // The TLS stream waits for ciphertext.
                if (!_innerPending)
                {
                    // Its machinery waits on something other than this stream: it would go on on another thread.
                    Error = "the TLS stream went asynchronous";
                    error = SocketError.OperationAborted;
                    return 0;
                }

                if (_cipherInEnd > _cipherInStart || _socketEnded)
                {
                    CompleteInnerRead();
                    continue;
                }

                if (_shortRead && !hungUp)
                {
                    // The last read left the socket empty: anything that arrived since raises a new event.
                    _shortRead = false;
                    error = SocketError.WouldBlock;
                    return 0;
                }

                _cipherIn ??= ArrayPool<byte>.Shared.Rent(CipherChunk);
                var space = _cipherIn.Length - _cipherInEnd;
                var received = ReceiveCiphertext(_cipherIn.AsSpan(_cipherInEnd), out error);
                if (received > 0)
                {
                    _cipherInEnd += received;
                    _shortRead = received < space;
                    continue;
                }

                if (error != SocketError.Success)
                {
                    ReturnCipherIn();
                    return 0;
                }

                _socketEnded = true;
            }
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or ObjectDisposedException or InvalidOperationException)
        {
            Error = "TLS: " + ex.Message;
            error = SocketError.ConnectionAborted;
            return 0;
        }
    }

    /// <summary>What has arrived on the socket, without waiting (WouldBlock when nothing has; 0 with Success at its end).</summary>
    private int ReceiveCiphertext(Span<byte> destination, out SocketError error)
    {
        if (_clientOptions is null)
        {
            return _socket.Receive(destination, SocketFlags.None, out error);
        }

        // A client's socket stays blocking (callers write to it): this read alone must not wait.
        var received = Linux.ReceiveNow(_socket.SafeHandle, destination);
        error = received < 0 ? SocketError.WouldBlock : SocketError.Success;
        return Math.Max(received, 0);
    }

    /// <summary>Encrypts <paramref name="plaintext"/> (all of it, always) and sends what the socket takes; false when it broke.</summary>
    public bool Send(ReadOnlySpan<byte> plaintext)
    {
        try
        {
            _ssl.Write(plaintext);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            Error = "TLS: " + ex.Message;
            return false;
        }

        return Flush(out _);
    }

    /// <summary>Sends the waiting ciphertext the socket takes now; false when the connection broke.</summary>
    public bool Flush(out bool wrote)
    {
        wrote = false;
        while (_cipherOutEnd > _cipherOutStart)
        {
            var sent = _socket.Send(_cipherOut.AsSpan(_cipherOutStart, _cipherOutEnd - _cipherOutStart), SocketFlags.None, out var error);
            if (sent > 0)
            {
                _cipherOutStart += sent;
                wrote = true;
                continue;
            }

            return error == SocketError.WouldBlock;
        }

        if (_cipherOut is not null)
        {
            ArrayPool<byte>.Shared.Return(_cipherOut);
            _cipherOut = null;
            _cipherOutStart = _cipherOutEnd = 0;
        }

        return true;
    }

    /// <summary>Gives the ciphertext read so far (none after the end of the socket's stream) to the TLS stream's read.</summary>
    private void CompleteInnerRead()
    {
        var n = Math.Min(_innerBuffer.Length, _cipherInEnd - _cipherInStart);
        if (n > 0)
        {
            _cipherIn.AsSpan(_cipherInStart, n).CopyTo(_innerBuffer.Span);
            _cipherInStart += n;
            if (_cipherInStart == _cipherInEnd)
            {
                ReturnCipherIn();
            }
        }

        _innerPending = false;
        _innerBuffer = default;

        // Runs the TLS stream's continuation here, inline (it may read again: from what is left, or pending anew).
        _innerRead.SetResult(n);
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_innerPending)
        {
            throw new InvalidOperationException("A read of the TLS transport is already pending.");
        }

        // A zero-byte read with ciphertext here completes at once, with 0: data is available.
        var available = _cipherInEnd - _cipherInStart;
        if (available > 0)
        {
            var n = Math.Min(buffer.Length, available);
            _cipherIn.AsSpan(_cipherInStart, n).CopyTo(buffer.Span);
            _cipherInStart += n;
            if (_cipherInStart == _cipherInEnd)
            {
                ReturnCipherIn();
            }

            return new ValueTask<int>(n);
        }

        if (_socketEnded)
        {
            return new ValueTask<int>(0);
        }

        _innerRead.Reset();
        _innerBuffer = buffer;
        _innerPending = true;
        return new ValueTask<int>(this, _innerRead.Version);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    /// <summary>A client's handshake reads by blocking on its socket; every other read is asynchronous (see <see cref="Receive"/>).</summary>
    public override int Read(Span<byte> buffer)
    {
        if (_clientOptions is null || _innerPending)
        {
            throw new NotSupportedException("The TLS transport is read only asynchronously, by its connection's owner.");
        }

        return _socket.Receive(buffer, SocketFlags.None);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (_clientOptions is not null)
        {
            // Under the connection's write lock (or in the handshake): straight to the blocking socket, all of it.
            while (buffer.Length > 0)
            {
                buffer = buffer[_socket.Send(buffer, SocketFlags.None)..];
            }

            return;
        }

        if (_cipherOut is null)
        {
            _cipherOut = ArrayPool<byte>.Shared.Rent(Math.Max(buffer.Length, CipherChunk));
            _cipherOutStart = _cipherOutEnd = 0;
        }
        else if (_cipherOut.Length - _cipherOutEnd < buffer.Length)
        {
            var pending = _cipherOutEnd - _cipherOutStart;
            var target = _cipherOut.Length - pending >= buffer.Length && pending <= _cipherOut.Length / 2
                ? _cipherOut
                : ArrayPool<byte>.Shared.Rent(Math.Max(pending + buffer.Length, _cipherOut.Length * 2));
            _cipherOut.AsSpan(_cipherOutStart, pending).CopyTo(target);
            if (target != _cipherOut)
            {
                ArrayPool<byte>.Shared.Return(_cipherOut);
                _cipherOut = target;
            }

            _cipherOutStart = 0;
            _cipherOutEnd = pending;
        }

        buffer.CopyTo(_cipherOut.AsSpan(_cipherOutEnd));
        _cipherOutEnd += buffer.Length;
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span);
        return ValueTask.CompletedTask;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Write(buffer.AsSpan(offset, count));
        return Task.CompletedTask;
    }

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    int IValueTaskSource<int>.GetResult(short token) => _innerRead.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _innerRead.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _innerRead.OnCompleted(continuation, state, token, flags);

    /// <summary>Ends the TLS state and gives back the buffers (by the connection's owner, once; the socket is its own).</summary>
    public void Release()
    {
        if (_innerPending)
        {
            // The TLS stream's read ends with the end of the stream rather than waiting for good.
            _innerPending = false;
            _innerBuffer = default;
            _socketEnded = true;
            _innerRead.SetResult(0);
        }

        // Observes how the handshake or the last read ended (a failure nobody looks at would be reported as unobserved).
        if (_handshake is { IsCompleted: true } handshake)
        {
            _ = handshake.Exception;
        }

        if (_reading && _read.IsCompleted)
        {
            _reading = false;
            try
            {
                _read.GetAwaiter().GetResult();
            }
            catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or ObjectDisposedException or InvalidOperationException)
            {
                // Closing anyway.
            }

            _read = default;
        }

        _ssl.Dispose();
        ReturnCipherIn();
        ReturnPlain();
        if (_cipherOut is not null)
        {
            ArrayPool<byte>.Shared.Return(_cipherOut);
            _cipherOut = null;
        }

        _cipherOutStart = _cipherOutEnd = 0;
    }

    private void ReturnCipherIn()
    {
        if (_cipherIn is not null)
        {
            ArrayPool<byte>.Shared.Return(_cipherIn);
            _cipherIn = null;
        }

        _cipherInStart = _cipherInEnd = 0;
    }

    private void ReturnPlain()
    {
        // A pending read of the TLS stream still writes into the buffer: it stays until that read completes.
        if (_plain is not null && (!_reading || _waiting))
        {
            ArrayPool<byte>.Shared.Return(_plain);
            _plain = null;
        }

        _plainStart = _plainEnd = 0;
    }
}
