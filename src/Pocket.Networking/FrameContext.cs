using System.Buffers;
using System.Text;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// One server connection seen from a handler: the current request's header, its body, and the reply.
/// Not thread-safe: calls for one connection never overlap. Reused across requests.
/// </summary>
public sealed class FrameContext
{
    /// <summary>The most prefix bytes <see cref="IFrameHandler.PrefixLength"/> may ask for.</summary>
    public const int MaxPrefix = 256;

    /// <summary>Bodies up to this size are buffered whole before the handler sees them; larger ones are admitted first.</summary>
    public const int InlineBody = 16 << 10;

    // Every connection, plain or TLS, is served by the event loops (see LoopConnection).
    private readonly LoopConnection _loop;
    private int _bodyRemaining;
    private bool _replied;

    internal FrameContext(LoopConnection loop, long connectionId, string remote)
    {
        _loop = loop;
        ConnectionId = connectionId;
        Remote = remote;
    }

    public long ConnectionId { get; }

    public string Remote { get; }

    public FrameHeader Header { get; private set; }

    /// <summary>Per-connection state owned by the handler (e.g. open write handles).</summary>
    public object? State { get; set; }

    public int BodyRemaining => _bodyRemaining;

    internal void Begin(FrameHeader header)
    {
        Header = header;
        _bodyRemaining = header.BodyLength;
        _replied = false;
        CloseAfterReply = false;

        // What a request that is never answered gets (the server then replies with an internal error).
        ReplyStatus = Status.InternalError;
    }

    internal bool Replied => _replied;

    /// <summary>True when the connection is in its server's epoll set now (tests).</summary>
    internal bool Watched => _loop.Watched;

    /// <summary>The connection's descriptor (tests: its socket options as the first turn found them).</summary>
    internal int Fd => _loop.Fd;

    /// <summary>The status of the reply to the current request (meaningful once it is answered).</summary>
    public Status ReplyStatus { get; private set; }

    /// <summary>Set by <see cref="Refuse"/>: the connection is closed once the reply is written.</summary>
    internal bool CloseAfterReply { get; private set; }

    /// <summary>Body bytes consumed so far through the direct destination (see <see cref="IFrameHandler.BodyDestination"/>).</summary>
    internal void Consumed(int count) => _bodyRemaining -= count;

    /// <summary>Reads the whole (remaining) body; the span is valid until the next call.</summary>
    public ReadOnlySpan<byte> ReadBody()
    {
        var span = _loop.TakeBody(_bodyRemaining);
        _bodyRemaining = 0;
        return span;
    }

    /// <summary>Reads exactly <paramref name="destination"/>.Length body bytes into it.</summary>
    public void ReadBodyInto(Span<byte> destination)
    {
        if (destination.Length > _bodyRemaining)
        {
            throw new InvalidOperationException("Read past the end of the frame body.");
        }

        _loop.TakeBody(destination.Length).CopyTo(destination);
        _bodyRemaining -= destination.Length;
    }

    internal void SkipBody()
    {
        _loop.TakeBody(_bodyRemaining);
        _bodyRemaining = 0;
    }

    /// <summary>Sends the reply to the current request.</summary>
    public void Reply(Status status, ReadOnlySpan<byte> body = default) => Reply(status, body, default);

    /// <summary>
    /// Sends a reply whose body is <paramref name="head"/> followed by <paramref name="data"/>. Replies are gathered
    /// while more requests are already waiting, so a pipelined burst is answered with one write.
    /// </summary>
    public void Reply(Status status, ReadOnlySpan<byte> head, ReadOnlySpan<byte> data)
    {
        if (_replied)
        {
            throw new InvalidOperationException("The request was already answered.");
        }

        _replied = true;
        ReplyStatus = status;
        var header = new FrameHeader(Header.Opcode, Header.Flags | FrameFlags.Reply, status, head.Length + data.Length, Header.RequestId, JobToken.None);
        _loop.AppendReply(header, head, data);
    }

    /// <summary>
    /// Runs <paramref name="action"/> on this connection's thread once the replies of the current turn have been written
    /// (or the connection has ended): for work the reply must not wait behind, such as waking a background thread,
    /// which on a busy machine may take the core before the reply has left. Asked again in the same turn with the
    /// same action and state, it runs once.
    /// </summary>
    public void AfterReplies(Action<object?> action, object? state) => _loop.AfterReplies(action, state);

    /// <summary>Replies with an error status and a UTF-8 message body.</summary>
    public void ReplyError(Status status, string message)
    {
        var max = Encoding.UTF8.GetMaxByteCount(message.Length);
        var rented = ArrayPool<byte>.Shared.Rent(max);
        try
        {
            var n = Encoding.UTF8.GetBytes(message, rented);
            Reply(status, rented.AsSpan(0, n));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Refuses the request (e.g. unauthorised): replies with the error and closes the connection once it is written,
    /// without reading the rest of the body.
    /// </summary>
    public void Refuse(Status status, string message)
    {
        ReplyError(status, message);
        CloseAfterReply = true;
    }
}
