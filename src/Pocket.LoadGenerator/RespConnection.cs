using System.Buffers.Text;
using System.Net.Sockets;
using System.Text;
using System.Threading.Tasks.Sources;
using Pocket.Networking;

namespace Pocket.LoadGenerator;

/// <summary>
/// One raw RESP connection with one command outstanding at a time: the shape of one serverless function talking to
/// Redis or Garnet (`pocket bench --connections N`). It is driven exactly as Pocket's own connections are: a blocking
/// connect on a pool thread (<see cref="FrameConnection.ConnectBlockingAsync"/>), the command written by the caller
/// with one blocking send, the reply read by the process's client loops (<see cref="ClientLoops"/>, epoll, edge-triggered)
/// and the caller completed inline on the loop. A GET's value goes straight into the caller's buffer.
/// </summary>
internal sealed class RespConnection : IClientLoopConnection, IValueTaskSource<long>, IAsyncDisposable
{
    /// <summary>What a reply that is not a bulk string may take in the input buffer (a SCAN page of 100 keys is ~10 KiB).</summary>
    private const int MaxBufferedReply = 4 << 20;

    /// <summary>Commands up to this size are copied into one buffer and sent with one system call.</summary>
    private const int CopyLimit = 1 << 20;

    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(5);

    /// <summary>A command whose reply takes longer fails the connection (a frozen peer must not hang the bench).</summary>
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);

    private readonly Socket _socket;
    private readonly ClientLoops _loops;
    private readonly ulong _id;
    private ManualResetValueTaskSourceCore<long> _core = new() { RunContinuationsAsynchronously = false };
    private byte[] _out = new byte[256];
    private byte[] _in = new byte[16 << 10];
    private int _inStart;
    private int _inEnd;
    private readonly TimeProvider _time;

    // The command in flight's start (a TimeProvider timestamp, at least 1), or 0 while the connection is free: one
    // field, so the loops' tick can never pair "busy" with the previous command's start (two fields once failed a
    // command just sent as 30 s late when a tick fell between their writes).
    private long _busySince;
    private volatile Exception? _failure;

    // The command in flight: a GET reads its bulk value into _destination (header, then body, then CRLF); any other
    // command's reply is parsed once it is whole in the input buffer.
    private bool _isGet;
    private Memory<byte> _destination;
    private int _bodyLength = -1;
    private int _bodyDone;

    // The last receive of this wake-up came back short: asking again would only return EAGAIN (a system call per
    // reply); the edge-triggered epoll reports what arrives next. As FrameConnection does, so both sides pay the same.
    private bool _drained;

    // 1 while a loop reads the connection (and for good once it failed); _readable is set by every event and cleared
    // by the reader before it reads (see OnReadable).
    private int _reading;
    private int _readable;

    // Set for good by an event that says the peer closed: reads then go on past a short one, to the end of the stream.
    private volatile bool _hungUp;

    private RespConnection(Socket socket, string remote, TimeProvider time)
    {
        _socket = socket;
        Remote = remote;
        _time = time;
        _loops = ClientLoops.Shared;
        _id = _loops.NewId();
        _loops.Add(_id, this, socket.Handle);
    }

    /// <summary>host:port of the server.</summary>
    public string Remote { get; }

    /// <summary>When the command in flight started (a timestamp of the connection's TimeProvider), 0 while none is.</summary>
    internal long BusySince => Volatile.Read(ref _busySince);

    /// <summary>The cursor of the last SCAN reply.</summary>
    public long LastCursor { get; private set; }

    /// <summary>
    /// Connects and asks PING: a connection counts as open only once the server has answered, because a server at its
    /// client limit (Redis' maxclients, Garnet's --network-connection-limit, 10,000 by default) accepts the TCP
    /// connection, writes "-ERR max number of clients reached" unasked and closes it; that is a refused connection,
    /// with the server's words, not a failed request later. <paramref name="time"/> (the system's by default) times
    /// the commands against their timeout.
    /// </summary>
    public static async Task<RespConnection> ConnectAsync(string host, int port, CancellationToken cancellationToken, TimeProvider? time = null, bool ping = true)
    {
        var remote = $"{host}:{port}";

        // From the process's descriptor budget, as Pocket's own connections (a bench whose cluster runs in its process
        // holds both ends of every connection); given back when the connection fails or is disposed (Fail).
        var socket = ConnectionDescriptors.TryOpenOutgoing(host)
            ?? throw new LoadGeneratorException($"cannot connect to {remote}: {ConnectionDescriptors.OutgoingRefusal()}");
        RespConnection connection;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ConnectTimeout);
            await FrameConnection.ConnectBlockingAsync(socket, host, port, timeout.Token).ConfigureAwait(false);
            connection = new RespConnection(socket, remote, time ?? TimeProvider.System);
        }
        catch (Exception ex)
        {
            socket.Dispose();
            ConnectionDescriptors.Return();
            if (ex is not (SocketException or OperationCanceledException or IOException) || (ex is OperationCanceledException && cancellationToken.IsCancellationRequested))
            {
                throw;
            }

            throw new LoadGeneratorException($"cannot connect to {remote}: {ex.Message}", ex);
        }

        if (!ping)
        {
            return connection;
        }

        try
        {
            await connection.CommandAsync("PING").ConfigureAwait(false);
            return connection;
        }
        catch (LoadGeneratorException ex)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new LoadGeneratorException($"{remote} refused the connection: {ex.Message}", ex);
        }
    }

    /// <summary>GET: the value's length, read into <paramref name="destination"/>; -1 when the key does not exist.</summary>
    public ValueTask<long> GetAsync(ReadOnlySpan<byte> key, Memory<byte> destination)
    {
        var length = Start(isGet: true, destination);
        length = Array(length, 2);
        length = Bulk(length, "GET"u8);
        length = Bulk(length, key);
        return SendAsync(length, default);
    }

    /// <summary>SET key value (an OK reply gives 0).</summary>
    public ValueTask<long> SetAsync(ReadOnlySpan<byte> key, ReadOnlyMemory<byte> value)
    {
        var length = Start(isGet: false, default);
        length = Array(length, 3);
        length = Bulk(length, "SET"u8);
        length = Bulk(length, key);
        if (value.Length + 32 + length <= CopyLimit)
        {
            length = Bulk(length, value.Span);
            return SendAsync(length, default);
        }

        length = BulkHeader(length, value.Length);
        return SendAsync(length, value);
    }

    /// <summary>Any other command whose arguments are text: its integer reply, 0 for a simple string, the key count of a SCAN page.</summary>
    public ValueTask<long> CommandAsync(params ReadOnlySpan<string> arguments)
    {
        var length = Start(isGet: false, default);
        length = Array(length, arguments.Length);
        foreach (var argument in arguments)
        {
            var bytes = Encoding.UTF8.GetByteCount(argument);
            Reserve(length + bytes + 32);
            length = BulkHeader(length, bytes);
            length += Encoding.UTF8.GetBytes(argument, _out.AsSpan(length));
            length = Crlf(length);
        }

        return SendAsync(length, default);
    }

    public ValueTask DisposeAsync()
    {
        Fail(new LoadGeneratorException($"connection to {Remote} closed"));
        return ValueTask.CompletedTask;
    }

    private int Start(bool isGet, Memory<byte> destination)
    {
        if (_failure is { } failure)
        {
            throw new LoadGeneratorException(failure.Message, failure);
        }

        if (Interlocked.CompareExchange(ref _busySince, Math.Max(_time.GetTimestamp(), 1), 0) != 0)
        {
            throw new InvalidOperationException("a RESP bench connection carries one command at a time");
        }

        // After the compare-and-swap that marked the command out: the loops' watchdog runs while it is.
        _loops.Watch();

        _core.Reset();
        _isGet = isGet;
        _destination = destination;
        _bodyLength = -1;
        _bodyDone = 0;
        return 0;
    }

    private ValueTask<long> SendAsync(int length, ReadOnlyMemory<byte> tail)
    {
        // The reply may be read by a loop as soon as the command leaves: everything it needs is set above.
        try
        {
            _socket.Send(_out.AsSpan(0, length));
            if (!tail.IsEmpty)
            {
                _socket.Send(tail.Span);
                _socket.Send("\r\n"u8);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            Fail(ex);
        }

        return new ValueTask<long>(this, _core.Version);
    }

    private void Reserve(int length)
    {
        if (_out.Length < length)
        {
            System.Array.Resize(ref _out, Math.Max(length, _out.Length * 2));
        }
    }

    private int Array(int at, int count)
    {
        Reserve(at + 16);
        _out[at++] = (byte)'*';
        return Crlf(Number(at, count));
    }

    private int BulkHeader(int at, int length)
    {
        Reserve(at + 16);
        _out[at++] = (byte)'$';
        return Crlf(Number(at, length));
    }

    private int Bulk(int at, ReadOnlySpan<byte> value)
    {
        at = BulkHeader(at, value.Length);
        Reserve(at + value.Length + 2);
        value.CopyTo(_out.AsSpan(at));
        return Crlf(at + value.Length);
    }

    private int Number(int at, long value)
    {
        Utf8Formatter.TryFormat(value, _out.AsSpan(at), out var written);
        return at + written;
    }

    private int Crlf(int at)
    {
        _out[at] = (byte)'\r';
        _out[at + 1] = (byte)'\n';
        return at + 2;
    }

    void IClientLoopConnection.OnReadable(bool hungUp)
    {
        if (hungUp)
        {
            _hungUp = true;
        }

        // The event is recorded before ownership is tried; the owner lets go before it looks at the record (each side
        // with a full fence), so one of the two always sees the other: the input is never left unread. A connection
        // that failed stays owned.
        Interlocked.Exchange(ref _readable, 1);
        while (Interlocked.CompareExchange(ref _reading, 1, 0) == 0)
        {
            Interlocked.Exchange(ref _readable, 0);
            try
            {
                if (_failure is not null || !ReadReply())
                {
                    return;
                }
            }
            catch (Exception ex)
            {
                Fail(ex);
                return;
            }

            Interlocked.Exchange(ref _reading, 0);
            if (Volatile.Read(ref _readable) == 0)
            {
                return;
            }
        }
    }

    void IClientLoopConnection.OnTick()
    {
        if (_failure is null && IsLate(Volatile.Read(ref _busySince), _time.GetTimestamp(), _time))
        {
            // Failing completes the caller, whose continuation may run long: not on the loops' timer.
            ThreadPool.UnsafeQueueUserWorkItem(
                static connection => connection.Fail(new LoadGeneratorException(
                    $"{connection.Remote} did not answer within {RequestTimeout.TotalSeconds:0} s (the server is unresponsive or overloaded)")),
                this,
                preferLocal: false);
        }
    }

    /// <summary>A command in flight gives the loops' timer something to watch (its timeout).</summary>
    bool IClientLoopConnection.HasWork(bool exact) => Volatile.Read(ref _busySince) != 0;

    /// <summary>
    /// The tick's decision, from the one published value: a command is late once it has been in flight (busy since
    /// <paramref name="busySince"/>, 0 when free) for <see cref="RequestTimeout"/>.
    /// </summary>
    internal static bool IsLate(long busySince, long now, TimeProvider time) =>
        busySince != 0 && time.GetElapsedTime(busySince, now) >= RequestTimeout;

    /// <summary>Reads and runs what has arrived; true when the connection should wait for more input.</summary>
    private bool ReadReply()
    {
        _drained = false;
        while (true)
        {
            if (Volatile.Read(ref _busySince) == 0)
            {
                // Nothing asked: a server that talks unasked is not speaking RESP to us.
                if (_inEnd > _inStart || Fill() > 0)
                {
                    throw Unasked(_in.AsSpan(_inStart, _inEnd - _inStart));
                }

                return true;
            }

            if (TryComplete(out var result))
            {
                // Set free before completing: the caller's continuation runs here and sends its next command. A
                // failure (a dispose meanwhile) that set it free first has completed the caller already.
                if (Interlocked.Exchange(ref _busySince, 0) != 0)
                {
                    _core.SetResult(result);
                }

                return true;
            }

            if (_drained)
            {
                return true;
            }

            int read;
            if (_isGet && _bodyLength >= 0 && _bodyDone < _bodyLength && _inStart == _inEnd)
            {
                // A value's body goes straight from the socket into the caller's buffer.
                read = Receive(_destination.Span[_bodyDone.._bodyLength]);
                if (read > 0)
                {
                    _bodyDone += read;
                }
            }
            else
            {
                read = Fill();
            }

            if (read < 0)
            {
                return true;
            }
        }
    }

    /// <summary>Advances the reply in flight with what is buffered; true with its result once it is whole.</summary>
    private bool TryComplete(out long result)
    {
        result = 0;
        var buffered = _in.AsSpan(_inStart, _inEnd - _inStart);
        if (!_isGet)
        {
            var parsed = ParseWhole(buffered, 0, out result);
            if (parsed < 0)
            {
                return false;
            }

            _inStart += parsed;
            return true;
        }

        if (_bodyLength < 0)
        {
            var line = buffered.IndexOf("\r\n"u8);
            if (line < 0)
            {
                return false;
            }

            if (buffered[0] == (byte)'-')
            {
                throw ServerError(buffered[1..line]);
            }

            var length = buffered[0] == (byte)'$' ? ParseNumber(buffered[1..line]) : throw Unexpected(buffered[..line]);
            _inStart += line + 2;
            if (length < 0)
            {
                result = -1;
                return true;
            }

            if (length > _destination.Length)
            {
                throw new LoadGeneratorException($"{Remote} returned a value of {length} bytes for a buffer of {_destination.Length}");
            }

            _bodyLength = (int)length;
            buffered = _in.AsSpan(_inStart, _inEnd - _inStart);
        }

        if (_bodyDone < _bodyLength)
        {
            var n = Math.Min(buffered.Length, _bodyLength - _bodyDone);
            buffered[..n].CopyTo(_destination.Span[_bodyDone..]);
            _bodyDone += n;
            _inStart += n;
            buffered = buffered[n..];
        }

        if (_bodyDone < _bodyLength || buffered.Length < 2)
        {
            return false;
        }

        if (buffered[0] != (byte)'\r' || buffered[1] != (byte)'\n')
        {
            throw new LoadGeneratorException($"{Remote} sent a bulk string without its closing CRLF");
        }

        _inStart += 2;
        result = _bodyLength;
        return true;
    }

    /// <summary>
    /// Parses one whole reply from <paramref name="input"/>: the bytes it took, or -1 when it is not all there. A
    /// simple string gives 0, an integer its value, a bulk string its length (-1 for nil), an array its element count,
    /// and a SCAN page (cursor, then an array of keys) the count of its keys, the cursor kept in <see cref="LastCursor"/>.
    /// </summary>
    private int ParseWhole(ReadOnlySpan<byte> input, int depth, out long result)
    {
        result = 0;
        var line = input.IndexOf("\r\n"u8);
        if (line < 0)
        {
            return -1;
        }

        var text = input[1..line];
        switch (input[0])
        {
            case (byte)'+':
                return line + 2;
            case (byte)'-':
                throw ServerError(text);
            case (byte)':':
                result = ParseNumber(text);
                return line + 2;
            case (byte)'$':
                var length = ParseNumber(text);
                if (length < 0)
                {
                    result = -1;
                    return line + 2;
                }

                var end = line + 2 + length + 2;
                if (input.Length < end)
                {
                    return -1;
                }

                result = length;
                return (int)end;
            case (byte)'*':
                var count = ParseNumber(text);
                var at = line + 2;
                var scanPage = false;
                result = Math.Max(count, 0);
                for (var i = 0; i < count; i++)
                {
                    var element = input[at..];
                    if (element.Length == 0)
                    {
                        return -1;
                    }

                    var kind = element[0];
                    var taken = ParseWhole(element, depth + 1, out var value);
                    if (taken < 0)
                    {
                        return -1;
                    }

                    if (depth == 0 && count == 2 && i == 0 && kind == (byte)'$' && value >= 0)
                    {
                        // SCAN's cursor comes as a bulk string of digits, its keys as an array after it.
                        var digits = element.IndexOf("\r\n"u8) + 2;
                        LastCursor = ParseNumber(element.Slice(digits, (int)value));
                        scanPage = true;
                    }
                    else if (scanPage && kind == (byte)'*')
                    {
                        result = value;
                    }

                    at += taken;
                }

                return at;
            default:
                throw Unexpected(input[..line]);
        }
    }

    private long ParseNumber(ReadOnlySpan<byte> digits) =>
        Utf8Parser.TryParse(digits, out long value, out var used) && used == digits.Length
            ? value
            : throw new LoadGeneratorException($"{Remote} sent '{Encoding.UTF8.GetString(digits)}' where a number was due");

    private LoadGeneratorException ServerError(ReadOnlySpan<byte> message) =>
        new($"{Remote}: {Encoding.UTF8.GetString(message)}");

    /// <summary>What a server sent unasked, in its own words (an error line's text, else the first bytes).</summary>
    private LoadGeneratorException Unasked(ReadOnlySpan<byte> input)
    {
        var line = input.IndexOf("\r\n"u8);
        var head = input[..(line >= 0 ? line : Math.Min(input.Length, 80))];
        return head.Length > 0 && head[0] == (byte)'-'
            ? new($"{Remote} sent an error no command asked for: {Encoding.UTF8.GetString(head[1..])}")
            : new($"{Remote} sent {input.Length} bytes no command asked for: '{Encoding.UTF8.GetString(head)}'");
    }

    private LoadGeneratorException Unexpected(ReadOnlySpan<byte> line) =>
        new($"{Remote} sent '{Encoding.UTF8.GetString(line)}', not a RESP reply this bench expects");

    /// <summary>Reads what has arrived into the input buffer: the count, or -1 when nothing has.</summary>
    private int Fill()
    {
        if (_inStart == _inEnd)
        {
            _inStart = _inEnd = 0;
        }
        else if (_inEnd == _in.Length)
        {
            if (_inStart > 0)
            {
                _in.AsSpan(_inStart, _inEnd - _inStart).CopyTo(_in);
                _inEnd -= _inStart;
                _inStart = 0;
            }
            else if (_in.Length < MaxBufferedReply)
            {
                System.Array.Resize(ref _in, _in.Length * 2);
            }
            else
            {
                throw new LoadGeneratorException($"{Remote} sent a reply of over {MaxBufferedReply} bytes");
            }
        }

        var n = Receive(_in.AsSpan(_inEnd));
        if (n > 0)
        {
            _inEnd += n;
        }

        return n;
    }

    /// <summary>Receives without waiting: the count, or -1 when nothing has arrived; the end of the stream throws.</summary>
    private int Receive(Span<byte> destination)
    {
        int n;
        try
        {
            n = Linux.ReceiveNow(_socket.SafeHandle, destination);
        }
        catch (ObjectDisposedException ex)
        {
            throw new LoadGeneratorException($"connection to {Remote} closed", ex);
        }

        _drained = n < destination.Length && !_hungUp;
        return n == 0 ? throw new LoadGeneratorException($"connection to {Remote} closed by the server") : n;
    }

    private void Fail(Exception cause)
    {
        var failure = cause as LoadGeneratorException ?? new LoadGeneratorException($"connection to {Remote} lost: {cause.Message}", cause);
        if (Interlocked.CompareExchange(ref _failure, failure, null) is not null)
        {
            return;
        }

        try
        {
            _loops.Remove(_id, _socket.Handle);
        }
        catch (ObjectDisposedException)
        {
        }

        _socket.Dispose();
        ConnectionDescriptors.Return();
        if (Interlocked.Exchange(ref _busySince, 0) != 0)
        {
            _core.SetException(failure);
        }
    }

    long IValueTaskSource<long>.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<long>.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource<long>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

}
