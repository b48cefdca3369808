using System.Buffers;
using System.Text;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>
/// One server connection seen from a handler: the current request's header, its body, and the reply.
/// Not thread-safe; used only by the connection's thread. Reused across requests.
/// </summary>
public sealed class FrameContext
{
    private readonly Stream _stream;
    private readonly BufferedReader _reader;
    private byte[] _bodyBuffer;
    private readonly byte[] _replyBuffer;
    private int _bodyRemaining;
    private int _replyLength;
    private bool _replied;

    internal FrameContext(Stream stream, long connectionId, string remote)
    {
        _stream = stream;
        ConnectionId = connectionId;
        Remote = remote;
        _reader = new BufferedReader(stream);
        _bodyBuffer = new byte[4 << 10];
        _replyBuffer = new byte[64 << 10];
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

        // What a request that is never answered gets (the server then replies with an internal error).
        ReplyStatus = Status.InternalError;
    }

    internal bool Replied => _replied;

    /// <summary>The status of the reply to the current request (meaningful once it is answered).</summary>
    public Status ReplyStatus { get; private set; }

    /// <summary>Reads the whole (remaining) body into a buffer owned by the connection, valid until the next call.</summary>
    public ReadOnlySpan<byte> ReadBody()
    {
        var count = _bodyRemaining;
        if (_bodyBuffer.Length < count)
        {
            _bodyBuffer = new byte[Math.Max(count, _bodyBuffer.Length * 2)];
        }

        ReadBodyInto(_bodyBuffer.AsSpan(0, count));
        return _bodyBuffer.AsSpan(0, count);
    }

    /// <summary>Reads exactly <paramref name="destination"/>.Length body bytes straight into it (no copy for large reads).</summary>
    public void ReadBodyInto(Span<byte> destination)
    {
        if (destination.Length > _bodyRemaining)
        {
            throw new InvalidOperationException("Read past the end of the frame body.");
        }

        _reader.ReadExactly(destination);
        _bodyRemaining -= destination.Length;
    }

    internal void SkipBody()
    {
        _reader.Skip(_bodyRemaining);
        _bodyRemaining = 0;
    }

    internal bool TryReadExactly(Span<byte> destination) => _reader.TryReadExactly(destination);

    /// <summary>See <see cref="BufferedReader.Reads"/>.</summary>
    internal long Reads => _reader.Reads;

    /// <summary>Sends the reply to the current request.</summary>
    public void Reply(Status status, ReadOnlySpan<byte> body = default) => Reply(status, body, default);

    /// <summary>
    /// Sends a reply whose body is <paramref name="head"/> followed by <paramref name="data"/> (data not copied when large).
    /// Small replies are gathered in a buffer while more requests are already waiting in the read buffer, so a
    /// pipelined burst is answered with one write instead of one per request; see <see cref="FlushIfIdle"/>.
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
        var total = FrameHeader.Size + head.Length + data.Length;
        if (total > _replyBuffer.Length - _replyLength)
        {
            FlushReplies();
        }

        if (total <= _replyBuffer.Length)
        {
            var target = _replyBuffer.AsSpan(_replyLength);
            header.Write(target);
            head.CopyTo(target[FrameHeader.Size..]);
            data.CopyTo(target[(FrameHeader.Size + head.Length)..]);
            _replyLength += total;
        }
        else
        {
            var prefix = FrameHeader.Size + head.Length;
            var buffer = prefix <= _replyBuffer.Length ? _replyBuffer : new byte[prefix];
            header.Write(buffer);
            head.CopyTo(buffer.AsSpan(FrameHeader.Size));
            _stream.Write(buffer, 0, prefix);
            _stream.Write(data);
        }
    }

    /// <summary>Writes the gathered replies unless the next request is already buffered whole (it will add to them).</summary>
    internal void FlushIfIdle()
    {
        if (_replyLength > 0 && !_reader.HasBufferedFrame())
        {
            FlushReplies();
        }
    }

    internal void FlushReplies()
    {
        if (_replyLength > 0)
        {
            var length = _replyLength;
            _replyLength = 0;
            _stream.Write(_replyBuffer, 0, length);
        }
    }

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

    internal void Flush() => _stream.Flush();
}
