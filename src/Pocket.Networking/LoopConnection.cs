using System.Buffers;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// A connection served by the event loops: a non-blocking socket (with, for TLS, a <see cref="TlsTransport"/> between
/// it and the frames), a receive buffer and a reply buffer, both borrowed from the shared pool only while they hold
/// bytes (an idle plain connection holds neither), and the state of the frame being received. Owned by one thread at a
/// time (see <see cref="EventLoopGroup"/>).
/// </summary>
internal sealed class LoopConnection
{
    private const int ReceiveBufferSize = FrameHeader.Size + FrameContext.MaxPrefix + FrameContext.InlineBody;
    private const int ReplyBufferSize = 16 << 10;
    private const int LargeReply = 64 << 10;

    // Reads per wake-up before the connection goes back to the loop, so one busy sender cannot starve the others.
    private const int ReadsPerWake = 16;

    // Frames handled per turn on an event loop. One read can hold hundreds of small pipelined frames (a 32 KiB buffer
    // of 32-byte requests is 1,024), and a turn read up to 16 of them: meanwhile every other connection of that loop
    // waited. Past this many the connection's replies are written and it waits for its next turn behind the others.
    internal const int FramesPerTurn = 32;

    private readonly FrameServer _server;
    private readonly IFrameHandler _handler;
    private readonly SafeHandle _socket;

    // A TLS connection's socket (its transport reads through it), closed in its place; a plain one has none.
    private readonly Socket? _tlsSocket;
    private readonly TlsTransport? _tls;
    private byte[]? _in;
    private int _inStart;
    private int _inEnd;
    private int _charged;
    private int _takeable;
    private byte[]? _out;
    private int _outStart;
    private int _outEnd;
    private Phase _phase;
    private int _prefix;
    private FrameAdmission _admission;
    private int _directReceived;
    private int _skip;
    private bool _eof;
    private bool _closed;
    private long _activity;
    private int _busy;
    private int _turnFrames;
    private bool _watchingWrites;
    private volatile int _repliesWaiting;

    // Set once the connection is in the loops' epoll set: by the end of its first turn, while its loop still owns it.
    private bool _registered;

    // 1 while a thread owns the connection (a loop running it or owing it a turn, the I/O pool, or whoever closed it:
    // a closed connection stays owned, so a late event never runs it). A new connection is owned by the loop that
    // accepted it until its first turn (see RunFirst) lets go.
    private int _owned = 1;

    // Set by RunFirst for the turn the accepting loop runs.
    private bool _firstTurn;

    // Set by every epoll event for the connection, cleared by its owner before each turn reads: an event that finds
    // the connection owned leaves it here, and the owner runs it again before letting go (edge-triggered, no event
    // would come again for that input).
    private int _ready;

    // Set for good by an event that says the peer closed: reads then go on past a short one, to the end of the stream.
    private volatile bool _hungUp;

    public LoopConnection(FrameServer server, IFrameHandler handler, SafeHandle socket, long id, string remote, TlsTransport? tls = null, Socket? tlsSocket = null)
    {
        _server = server;
        _handler = handler;
        _socket = socket;
        _tls = tls;
        _tlsSocket = tlsSocket;
        Id = id;
        Fd = (int)socket.DangerousGetHandle();
        Context = new FrameContext(this, id, remote);
    }

    private enum Phase
    {
        Header,
        Prefix,
        Body,
        Direct,
        Skip,
        Ready,
    }

    private enum Outcome
    {
        /// <summary>Waits for input (or for room to write): the owner lets go.</summary>
        Wait,

        /// <summary>Used up its turn with input left: the owner keeps it and runs it again after others.</summary>
        Again,

        /// <summary>Closed, or handed to the I/O pool: the caller no longer owns it.</summary>
        Gone,
    }

    private enum Step
    {
        NeedBytes,
        Offload,
        Close,
        Yield,

        /// <summary>The peer lets replies wait: no more of its requests until it reads (see <see cref="PauseForReader"/>).</summary>
        Pause,
    }

    public long Id { get; }

    public int Fd { get; }

    public FrameContext Context { get; }

    /// <summary>Counts progress (bytes read or written, handlers run); the idle check compares it between checks.</summary>
    public long Activity => Volatile.Read(ref _activity);

    /// <summary>True while a handler runs or waits for the I/O pool: never idle then.</summary>
    public bool Busy => Volatile.Read(ref _busy) != 0;

    /// <summary>True when the connection is in the loops' epoll set now (tests: see <see cref="RunFirst"/>).</summary>
    internal bool Watched => _server.Loops.Watches(Fd);

    /// <summary>
    /// Reply bytes left for the peer to read when the connection's last turn ended (0 when it has read them all): the
    /// idle check closes a connection whose peer reads none of them for long (see
    /// <see cref="FrameServerOptions.ReplyStallTimeout"/>).
    /// </summary>
    public int RepliesWaiting => _repliesWaiting;

    /// <summary>Bytes the connection holds now: its buffers (0 when idle).</summary>
    public int BufferedBytes => (_in?.Length ?? 0) + (_out?.Length ?? 0);

    /// <summary>The peer hung up (an epoll event said so): reads go on until the end of the stream.</summary>
    public void NoteHangUp() => _hungUp = true;

    /// <summary>
    /// An epoll event for the connection (on a loop): runs it when no other thread owns it, or leaves the event for the
    /// owner. True when the loop owes it another turn (see <see cref="Run"/>).
    /// </summary>
    public bool OnReady()
    {
        // The event is recorded before ownership is tried; the owner lets go before it looks at the record (each side
        // with a full fence), so one of the two always sees the other: the input is never left unread.
        Interlocked.Exchange(ref _ready, 1);
        return Interlocked.CompareExchange(ref _owned, 1, 0) == 0 && Run(onPool: false);
    }

    /// <summary>
    /// The first turn of a new connection, on the loop that accepted it (which owns it from the start). The connection
    /// joins the epoll set (edge-triggered) only at the end of that turn, before its owner lets go of it or hands it to
    /// the I/O pool (see <see cref="Register"/>): the ADD then reports input that came after the turn's last read, and
    /// none that the turn read. Added before the turn, a first request already there raised an event at once that woke
    /// the server's other loop for input this turn was about to read. Returns as <see cref="Run"/>.
    /// </summary>
    public bool RunFirst()
    {
        _firstTurn = true;
        return Run(onPool: false);
    }

    /// <summary>
    /// Serves the connection, which the caller owns, until it would block, then lets go of it (running it again if an
    /// event came meanwhile); or hands it to the I/O pool; or closes it. True when it used up its turn (see
    /// <see cref="FramesPerTurn"/>, ReadsPerWake) with input left: the caller keeps it and owes it another turn.
    /// </summary>
    public bool Run(bool onPool)
    {
        while (true)
        {
            Interlocked.Exchange(ref _ready, 0);
            var outcome = Turn(onPool);
            if (outcome == Outcome.Gone)
            {
                return false;
            }

            // Kept by its owner for another turn: once the server stops, whoever holds the queue it goes to closes it
            // (a loop as it leaves, the pool's or the hand-back queue's next writer).
            if (outcome == Outcome.Again)
            {
                return true;
            }

            Interlocked.Exchange(ref _owned, 0);

            // Once the server stops, only a connection's owner closes it (the server closes only the ones nobody owns,
            // see TryClaim), so a turn that outlived the server's wait still ends with its own buffers. Whichever of the
            // two claims it closes it: the server sets its flag before it claims; this side lets go before it reads it.
            if (_server.Loops.Stopping)
            {
                if (TryClaim())
                {
                    Close(null);
                }

                return false;
            }

            if (Volatile.Read(ref _ready) == 0 || Interlocked.CompareExchange(ref _owned, 1, 0) != 0)
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Takes the connection when no thread owns it (the server, when it stops, before it closes it). False while a loop
    /// or a pool thread owns it: that thread closes it itself.
    /// </summary>
    internal bool TryClaim() => Interlocked.CompareExchange(ref _owned, 1, 0) == 0;

    private Outcome Turn(bool onPool)
    {
        if (_closed)
        {
            return Outcome.Gone;
        }

        var first = _firstTurn;
        _firstTurn = false;
        try
        {
            var reads = 0;
            var drained = false;
            _turnFrames = 0;
            _tls?.BeginTurn();
            while (true)
            {
                var step = Advance(onPool);
                if (step == Step.Offload)
                {
                    if (!FlushReplies())
                    {
                        Close("connection reset while writing");
                        return Outcome.Gone;
                    }

                    RunAfterReplies();

                    // The pool thread may let go of it: events must come from then on.
                    if (!_registered && !Register(writes: false))
                    {
                        return Outcome.Gone;
                    }

                    Volatile.Write(ref _busy, 1);
                    _server.Loops.Offload(this);
                    return Outcome.Gone;
                }

                if (step == Step.Close)
                {
                    FlushReplies();
                    Close(null);
                    return Outcome.Gone;
                }

                if (step == Step.Yield)
                {
                    return EndTurn(Outcome.Again);
                }

                if (step == Step.Pause)
                {
                    if (PauseForReader() is { } paused)
                    {
                        return paused;
                    }

                    continue;
                }

                if (_eof)
                {
                    if (!FlushReplies())
                    {
                        Close("connection reset while writing");
                        return Outcome.Gone;
                    }

                    // A peer that sent its last request and shut its side still reads the replies: they go out as it
                    // does, and the connection closes once they are all gone (or when it reads none for long: see
                    // FrameServerOptions.ReplyStallTimeout).
                    if (WaitingReplies > 0)
                    {
                        return EndTurn(Outcome.Wait);
                    }

                    Close(_phase == Phase.Header ? null : "connection closed in the middle of a frame");
                    return Outcome.Gone;
                }

                // After a short read the socket is empty: write the replies rather than read again only to hear "would
                // block"; input that arrives after that read raises a new event (the end of the stream may not: see
                // _hungUp). A direct body is read on (its handler
                // hears of each piece when asked for the next destination).
                if ((drained && _phase != Phase.Direct) || _server.Loops.Stopping)
                {
                    break;
                }

                // Input may be left in the socket, and no event would come for it: the connection waits for its next turn.
                if (reads++ == ReadsPerWake)
                {
                    ReleaseEmptyReceiveBuffer();
                    return EndTurn(Outcome.Again);
                }

                // Requests left unread in the socket hold the peer back (its sends stop when the kernel's buffers are
                // full): the server buffers nothing more for a peer that does not read.
                if (WaitingReplies >= _server.ReplyPause && PauseForReader() is { } held)
                {
                    return held;
                }

                var read = Receive(out var error, out drained);
                if (read > 0)
                {
                    Interlocked.Increment(ref _activity);
                    if (first)
                    {
                        first = false;
                        _server.Loops.CountFirstReadAtAccept();
                    }

                    continue;
                }

                if (error == SocketError.WouldBlock)
                {
                    break;
                }

                if (error == SocketError.Success)
                {
                    _eof = true;
                    continue;
                }

                Close(_tls?.Error ?? error.ToString());
                return Outcome.Gone;
            }

            ReleaseEmptyReceiveBuffer();
            return EndTurn(Outcome.Wait);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            NetworkingLog.HandlerFailed(_server.Logger, _server.Name, ex);
            Close(ex.Message);
            return Outcome.Gone;
        }
    }

    /// <summary>Reply bytes (for TLS, ciphertext too) the socket has not taken yet.</summary>
    private int WaitingReplies => _outEnd - _outStart + (_tls?.Pending ?? 0);

    /// <summary>
    /// Backpressure: with <see cref="FrameServerOptions.ReplyPauseBytes"/> of replies waiting for the peer even after
    /// the socket took what it could, the connection handles and reads none of its requests until there is room to
    /// write (an edge-triggered write event then brings it back: the socket was full, so room comes as a change). A
    /// client that asks for more than it reads at once (many large gets pipelined on one connection) is served at the
    /// pace it reads, instead of the server queuing every reply or closing the connection at its bound. Null when
    /// the socket took enough for the turn to go on; else the turn's outcome (Wait, or Gone when the write failed).
    /// </summary>
    private Outcome? PauseForReader()
    {
        if (!FlushReplies())
        {
            Close("connection reset while writing");
            return Outcome.Gone;
        }

        if (WaitingReplies < _server.ReplyPause)
        {
            return null;
        }

        _server.CountReplyPause();
        ReleaseEmptyReceiveBuffer();
        return EndTurn(Outcome.Wait);
    }

    /// <summary>
    /// Writes the turn's replies and closes a connection whose peer lets too many of them wait; replies left waiting
    /// make the connection watch for room to write. Returns <paramref name="outcome"/>, or Gone when it closed.
    /// </summary>
    private Outcome EndTurn(Outcome outcome)
    {
        if (!FlushReplies())
        {
            Close("connection reset while writing");
            return Outcome.Gone;
        }

        RunAfterReplies();

        var backlog = WaitingReplies;
        _repliesWaiting = backlog;
        if (backlog > _server.Options.MaxReplyBacklog)
        {
            NetworkingLog.ReplyBacklogExceeded(_server.Logger, _server.Name, Context.Remote, backlog, _server.Options.MaxReplyBacklog);
            Close(null);
            return Outcome.Gone;
        }

        if (backlog > 0 && !_watchingWrites)
        {
            if (!_registered)
            {
                if (!Register(writes: true))
                {
                    return Outcome.Gone;
                }
            }
            else if (!_server.Loops.WatchWrites(this))
            {
                Close($"epoll_ctl failed: errno {Marshal.GetLastPInvokeError()}");
                return Outcome.Gone;
            }

            _watchingWrites = true;
        }

        // The owner lets go next: from then on only an event brings the connection back.
        if (outcome == Outcome.Wait && !_registered && !Register(writes: false))
        {
            return Outcome.Gone;
        }

        return outcome;
    }

    /// <summary>
    /// Adds the connection to the epoll set, by its owner (the descriptor is open, so its number is this socket's and
    /// no other's); closes it when epoll refuses (false).
    /// </summary>
    private bool Register(bool writes)
    {
        if (_server.Loops.Add(this, writes, out var errno))
        {
            _registered = true;
            return true;
        }

        Close($"epoll_ctl add failed: errno {errno}");
        return false;
    }

    /// <summary>Moves the frame state machine on over the bytes already received, handling whole frames inline.</summary>
    private Step Advance(bool onPool)
    {
        while (true)
        {
            var buffered = _inEnd - _inStart;
            switch (_phase)
            {
                case Phase.Header:
                    if (buffered < FrameHeader.Size)
                    {
                        MakeRoom(FrameHeader.Size);
                        return Step.NeedBytes;
                    }

                    // The I/O pool runs one connection per thread, with no one waiting behind it on that thread.
                    if (_turnFrames == FramesPerTurn && !onPool)
                    {
                        return Step.Yield;
                    }

                    // Checked before each request, so a connection's replies never pass the pause by more than one.
                    if (WaitingReplies >= _server.ReplyPause)
                    {
                        return Step.Pause;
                    }

                    _turnFrames++;
                    if (!StartFrame())
                    {
                        return Step.Close;
                    }

                    break;

                case Phase.Prefix:
                    if (buffered < _prefix)
                    {
                        MakeRoom(_prefix);
                        return Step.NeedBytes;
                    }

                    _takeable = _prefix;
                    _admission = Admit();
                    _takeable = 0;
                    if (Context.Replied)
                    {
                        if (Context.CloseAfterReply)
                        {
                            return Step.Close;
                        }

                        _skip = Context.BodyRemaining;
                        Context.Consumed(_skip);
                        _phase = Phase.Skip;
                    }
                    else
                    {
                        _phase = (_admission & FrameAdmission.Direct) != 0 ? Phase.Direct : Phase.Body;
                        _directReceived = 0;
                    }

                    break;

                case Phase.Body:
                    var need = Context.BodyRemaining;
                    if (buffered < need)
                    {
                        if (!MakeRoom(need))
                        {
                            Context.Refuse(Status.CapacityExceeded, $"the server is buffering too many request bytes ({_server.Options.MaxBufferedRequestBytes}); retry later");
                            return Step.Close;
                        }

                        return Step.NeedBytes;
                    }

                    _phase = Phase.Ready;
                    break;

                case Phase.Direct:
                    if (Context.BodyRemaining == 0)
                    {
                        _phase = Phase.Ready;
                        break;
                    }

                    if (buffered == 0)
                    {
                        return Step.NeedBytes;
                    }

                    var destination = _handler.BodyDestination(Context, _directReceived);
                    var n = Math.Min(Math.Min(destination.Length, buffered), Context.BodyRemaining);
                    _in.AsSpan(_inStart, n).CopyTo(destination);
                    _inStart += n;
                    _directReceived += n;
                    Context.Consumed(n);
                    break;

                case Phase.Skip:
                    var skipped = Math.Min(buffered, _skip);
                    _inStart += skipped;
                    _skip -= skipped;
                    if (_skip > 0)
                    {
                        return Step.NeedBytes;
                    }

                    _phase = Phase.Header;
                    break;

                case Phase.Ready:
                    if ((_admission & FrameAdmission.Blocking) != 0 && !onPool)
                    {
                        return Step.Offload;
                    }

                    if (!RunHandler())
                    {
                        return Step.Close;
                    }

                    break;
            }
        }
    }

    /// <summary>Reads and checks the header; false when the frame was answered with an error and the connection must close.</summary>
    private bool StartFrame()
    {
        var started = _server.TryBeginFrame(Context, _in.AsSpan(_inStart, FrameHeader.Size), out var prefix);
        _inStart += FrameHeader.Size;
        if (!started)
        {
            return false;
        }

        if (prefix >= 0)
        {
            _prefix = prefix;
            _phase = Phase.Prefix;
        }
        else
        {
            _admission = FrameAdmission.Buffer;
            _phase = Phase.Body;
        }

        return true;
    }

    /// <summary>Asks the handler to admit the frame from its prefix; a handler that throws gets the request refused.</summary>
    private FrameAdmission Admit()
    {
        try
        {
            return _handler.Admit(Context);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            NetworkingLog.HandlerFailed(_server.Logger, _server.Name, ex);
            if (!Context.Replied)
            {
                Context.Refuse(Status.InternalError, "internal error: " + ex.Message);
            }

            return FrameAdmission.Buffer;
        }
    }

    /// <summary>Runs the handler on the complete frame; false when the connection must close after the reply.</summary>
    private bool RunHandler()
    {
        _takeable = Context.BodyRemaining;
        Volatile.Write(ref _busy, 1);
        try
        {
            _handler.Handle(Context);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            NetworkingLog.HandlerFailed(_server.Logger, _server.Name, ex);
            if (!Context.Replied)
            {
                Context.ReplyError(Status.InternalError, "internal error: " + ex.Message);
            }
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
            Interlocked.Increment(ref _activity);
        }

        if (Context.BodyRemaining > 0)
        {
            Context.SkipBody();
        }

        _takeable = 0;
        _phase = Phase.Header;
        if (!Context.Replied)
        {
            Context.ReplyError(Status.InternalError, "internal error: request was not answered");
        }

        return !Context.CloseAfterReply;
    }

    /// <summary>Body bytes handed to the handler from the receive buffer (valid until the handler returns).</summary>
    internal ReadOnlySpan<byte> TakeBody(int count)
    {
        if (count > _takeable || count > _inEnd - _inStart)
        {
            throw new InvalidOperationException(_phase == Phase.Prefix
                ? "Read past the admitted prefix of the frame body."
                : "Read past the buffered frame body.");
        }

        var span = _in.AsSpan(_inStart, count);
        _inStart += count;
        _takeable -= count;
        return span;
    }

    /// <summary>
    /// Makes the receive buffer able to hold <paramref name="needed"/> bytes from its start: compacts it, or swaps in a
    /// larger one charged to the server's bound on buffered request bytes (false when that bound is reached).
    /// </summary>
    private bool MakeRoom(int needed)
    {
        if (_in is null)
        {
            return true;
        }

        if (_in.Length - _inStart >= needed)
        {
            return true;
        }

        var buffered = _inEnd - _inStart;
        if (needed <= _in.Length)
        {
            _in.AsSpan(_inStart, buffered).CopyTo(_in);
            _inStart = 0;
            _inEnd = buffered;
            return true;
        }

        if (!_server.ChargeBuffered(needed))
        {
            return false;
        }

        var larger = ArrayPool<byte>.Shared.Rent(needed);
        _in.AsSpan(_inStart, buffered).CopyTo(larger);
        ReturnReceiveBuffer();
        _in = larger;
        _charged = needed;
        _inStart = 0;
        _inEnd = buffered;
        return true;
    }

    private int Receive(out SocketError error, out bool drained)
    {
        if (_phase == Phase.Direct && _inEnd == _inStart)
        {
            // Straight from the socket into the handler's destination (e.g. node memory): no copy.
            var destination = _handler.BodyDestination(Context, _directReceived);
            if (destination.Length > Context.BodyRemaining)
            {
                destination = destination[..Context.BodyRemaining];
            }

            var direct = ReceiveFrom(destination, out error);
            drained = direct < destination.Length && !_hungUp && _tls is null;
            if (direct > 0)
            {
                _directReceived += direct;
                Context.Consumed(direct);
            }

            return direct;
        }

        if (_in is null)
        {
            _in = ArrayPool<byte>.Shared.Rent(ReceiveBufferSize);
            _inStart = _inEnd = 0;
        }
        else if (_inEnd == _in.Length)
        {
            MakeRoom(_inEnd - _inStart + 1);
        }

        var space = _in.Length - _inEnd;
        var read = ReceiveFrom(_in.AsSpan(_inEnd), out error);

        // Plaintext short of the space says nothing of the socket: a TLS connection reads until it would block.
        drained = read < space && !_hungUp && _tls is null;
        if (read > 0)
        {
            _inEnd += read;
        }

        return read;
    }

    /// <summary>Bytes from the socket, or for TLS decrypted ones (a direct body is then decrypted and copied; plain ones land in place).</summary>
    private int ReceiveFrom(Span<byte> destination, out SocketError error)
    {
        if (_tls is not null)
        {
            return _tls.Receive(destination, _hungUp, out error);
        }

        // Straight on the descriptor: this thread owns the connection, and only the owner closes it.
        var read = Linux.ReceiveOwned(Fd, destination, out var errno);
        error = read >= 0 ? SocketError.Success : Linux.SocketErrorOf(errno);
        return Math.Max(read, 0);
    }

    /// <summary>Bytes to the socket (what it takes now), or for TLS encrypted (all of them) and sent as far as the socket takes.</summary>
    private int SendTo(ReadOnlySpan<byte> bytes, out SocketError error)
    {
        if (_tls is null)
        {
            var sent = Linux.SendOwned(Fd, bytes, out var errno);
            error = sent >= 0 ? SocketError.Success : Linux.SocketErrorOf(errno);
            return Math.Max(sent, 0);
        }

        error = _tls.Send(bytes) ? SocketError.Success : SocketError.ConnectionReset;
        return error == SocketError.Success ? bytes.Length : 0;
    }

    private void ReleaseEmptyReceiveBuffer()
    {
        if (_in is not null && _inStart == _inEnd && _phase is not Phase.Prefix and not Phase.Body and not Phase.Ready)
        {
            ReturnReceiveBuffer();
            _in = null;
            _inStart = _inEnd = 0;
        }
    }

    private void ReturnReceiveBuffer()
    {
        if (_in is null)
        {
            return;
        }

        ArrayPool<byte>.Shared.Return(_in);
        if (_charged > 0)
        {
            _server.ChargeBuffered(-_charged);
            _charged = 0;
        }
    }

    /// <summary>Adds a reply to the gathered ones (written when the burst is handled); large data is sent at once when it can be.</summary>
    internal void AppendReply(FrameHeader header, ReadOnlySpan<byte> head, ReadOnlySpan<byte> data)
    {
        var prefix = FrameHeader.Size + head.Length;
        if (data.Length >= LargeReply && prefix <= FrameContext.MaxPrefix && (_out is null || _outEnd == _outStart) && _tls is null)
        {
            // Nothing is waiting to go out before it: the header and the data leave with one gathered system call, so
            // the client is woken once for the reply, not for its header and again for its data (a fresh client's
            // first 64 KiB get paid for a second wake-up).
            Span<byte> start = stackalloc byte[prefix];
            header.Write(start);
            head.CopyTo(start[FrameHeader.Size..]);
            int sent;
            try
            {
                sent = Linux.SendNow(_socket, start, data);
            }
            catch (IOException)
            {
                // The peer is gone: the next read sees it and closes the connection.
                return;
            }

            _server.CountGatheredReply();
            if (sent > 0)
            {
                Interlocked.Increment(ref _activity);
            }

            if (sent == prefix + data.Length)
            {
                return;
            }

            // What the socket did not take waits in the reply buffer for the socket to have room.
            sent = Math.Max(sent, 0);
            if (sent < prefix)
            {
                start[sent..].CopyTo(ReserveReply(prefix - sent));
                _outEnd += prefix - sent;
                sent = prefix;
            }

            data = data[(sent - prefix)..];
            data.CopyTo(ReserveReply(data.Length));
            _outEnd += data.Length;
            return;
        }

        if (data.Length >= LargeReply)
        {
            var target = ReserveReply(prefix);
            header.Write(target);
            head.CopyTo(target[FrameHeader.Size..]);
            _outEnd += prefix;
            if (FlushReplies() && _outEnd == _outStart)
            {
                while (data.Length > 0)
                {
                    var sent = SendTo(data, out var error);
                    if (sent <= 0)
                    {
                        if (error != SocketError.WouldBlock)
                        {
                            // The peer is gone: the next read sees it and closes the connection.
                            return;
                        }

                        break;
                    }

                    Interlocked.Increment(ref _activity);
                    data = data[sent..];
                }
            }

            if (data.Length > 0)
            {
                data.CopyTo(ReserveReply(data.Length));
                _outEnd += data.Length;
            }

            return;
        }

        var span = ReserveReply(prefix + data.Length);
        header.Write(span);
        head.CopyTo(span[FrameHeader.Size..]);
        data.CopyTo(span[prefix..]);
        _outEnd += prefix + data.Length;
    }

    private Span<byte> ReserveReply(int length)
    {
        if (_out is null)
        {
            _out = ArrayPool<byte>.Shared.Rent(Math.Max(length, ReplyBufferSize));
            _outStart = _outEnd = 0;
        }
        else if (_out.Length - _outEnd < length)
        {
            var pending = _outEnd - _outStart;
            if (_out.Length - pending >= length && pending <= _out.Length / 2)
            {
                _out.AsSpan(_outStart, pending).CopyTo(_out);
            }
            else
            {
                var larger = ArrayPool<byte>.Shared.Rent(Math.Max(pending + length, _out.Length * 2));
                _out.AsSpan(_outStart, pending).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_out);
                _out = larger;
            }

            _outStart = 0;
            _outEnd = pending;
        }

        return _out.AsSpan(_outEnd, length);
    }

    /// <summary>Writes what the socket takes now; false when the connection broke.</summary>
    private bool FlushReplies()
    {
        while (_out is not null && _outEnd > _outStart)
        {
            var sent = SendTo(_out.AsSpan(_outStart, _outEnd - _outStart), out var error);
            if (sent > 0)
            {
                _outStart += sent;
                Interlocked.Increment(ref _activity);
                continue;
            }

            return error == SocketError.WouldBlock;
        }

        if (_out is not null)
        {
            ArrayPool<byte>.Shared.Return(_out);
            _out = null;
            _outStart = _outEnd = 0;
        }

        if (_tls is null)
        {
            return true;
        }

        // The ciphertext of the replies, and of the handshake, which needs no reply to be sent.
        var flushed = _tls.Flush(out var wrote);
        if (wrote)
        {
            Interlocked.Increment(ref _activity);
        }

        return flushed;
    }

    // Work the handlers asked to run once the turn's replies are written (FrameContext.AfterReplies); a few per turn
    // at most (a Commit's seal), so a small array, made on first use (an idle connection holds none) and reused; one
    // more than it holds runs at once.
    private (Action<object?> Action, object? State)[]? _after;
    private int _afterCount;

    internal void AfterReplies(Action<object?> action, object? state)
    {
        var after = _after ??= new (Action<object?>, object?)[4];
        for (var i = 0; i < _afterCount; i++)
        {
            if (after[i].Action == action && ReferenceEquals(after[i].State, state))
            {
                return;
            }
        }

        if (_afterCount == after.Length)
        {
            RunAfter(action, state);
            return;
        }

        after[_afterCount++] = (action, state);
    }

    private void RunAfterReplies()
    {
        for (var i = 0; i < _afterCount; i++)
        {
            var (action, state) = _after![i];
            _after[i] = default;
            RunAfter(action, state);
        }

        _afterCount = 0;
    }

    private void RunAfter(Action<object?> action, object? state)
    {
        try
        {
            action(state);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            NetworkingLog.HandlerFailed(_server.Logger, _server.Name, ex);
        }
    }

    /// <summary>
    /// Ends the connection once, by its owner only (a loop or pool thread, or the server once it claimed it, or once
    /// every thread has left): its buffers go back to the pool here, so nobody may be reading them.
    /// </summary>
    internal void Close(string? reason)
    {
        if (_closed)
        {
            return;
        }

        _closed = true;
        _repliesWaiting = 0;
        RunAfterReplies();
        if (reason is not null && !_server.Loops.Stopping)
        {
            NetworkingLog.ConnectionClosed(_server.Logger, _server.Name, Context.Remote, reason);
        }

        try
        {
            if (_phase == Phase.Direct || (_phase == Phase.Ready && (_admission & FrameAdmission.Direct) != 0))
            {
                _handler.Abandon(Context);
            }

            _handler.OnDisconnected(Context);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            NetworkingLog.HandlerFailed(_server.Logger, _server.Name, ex);
        }
        finally
        {
            _server.Loops.Remove(this, _registered);
            _tls?.Release();
            if (_tlsSocket is not null)
            {
                _tlsSocket.Dispose();
            }
            else
            {
                _socket.Dispose();
            }

            ReturnReceiveBuffer();
            _in = null;
            if (_out is not null)
            {
                ArrayPool<byte>.Shared.Return(_out);
                _out = null;
            }

            _server.Unregister(Context.ConnectionId);
        }
    }
}
