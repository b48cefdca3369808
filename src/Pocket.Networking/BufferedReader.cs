using System.Net.Sockets;

namespace Pocket.Networking;

/// <summary>Exact reads from a stream through a small buffer; large reads bypass the buffer.</summary>
internal sealed class BufferedReader
{
    private readonly Stream _stream;
    private readonly byte[] _buffer;
    private int _start;
    private int _end;
    private long _reads;

    public BufferedReader(Stream stream, int bufferSize = 64 << 10)
    {
        _stream = stream;
        _buffer = new byte[bufferSize];
    }

    /// <summary>
    /// Reads from the stream, counted: odd while one is under way (waiting for the peer), even between them. A
    /// server sees a connection as idle while this stays odd and unchanged (see <see cref="FrameServer"/>).
    /// </summary>
    public long Reads => Volatile.Read(ref _reads);

    /// <summary>Fills <paramref name="destination"/>; false on a clean end of stream before the first byte.</summary>
    public bool TryReadExactly(Span<byte> destination)
    {
        if (destination.Length == 0)
        {
            return true;
        }

        if (_start == _end)
        {
            _start = 0;
            _end = ReadStream(_buffer);
            if (_end == 0)
            {
                return false;
            }
        }

        ReadExactly(destination);
        return true;
    }

    public void ReadExactly(Span<byte> destination)
    {
        var buffered = _end - _start;
        if (buffered > 0)
        {
            var n = Math.Min(buffered, destination.Length);
            _buffer.AsSpan(_start, n).CopyTo(destination);
            _start += n;
            destination = destination[n..];
        }

        while (destination.Length > 0)
        {
            if (destination.Length >= _buffer.Length / 2)
            {
                var read = ReadStream(destination);
                if (read == 0)
                {
                    throw new EndOfStreamException("Connection closed in the middle of a frame.");
                }

                destination = destination[read..];
            }
            else
            {
                _start = 0;
                _end = ReadStream(_buffer);
                if (_end == 0)
                {
                    throw new EndOfStreamException("Connection closed in the middle of a frame.");
                }

                var n = Math.Min(_end, destination.Length);
                _buffer.AsSpan(0, n).CopyTo(destination);
                _start = n;
                destination = destination[n..];
            }
        }
    }

    private int ReadStream(Span<byte> destination)
    {
        Volatile.Write(ref _reads, _reads + 1);
        int read;
        while (true)
        {
            try
            {
                read = _stream.Read(destination);
                break;
            }
            catch (IOException ex) when (_stream is NetworkStream network && IsSpuriousTimeout(ex, network.Socket))
            {
                // Seen once: a client's blocking read on loopback failed at once with "Connection timed out" while
                // callers wrote large frames asynchronously (the runtime turns a socket non-blocking on its first
                // asynchronous operation, and reports EAGAIN from a blocking read as a timeout). No receive timeout
                // is ever set here, so this is not a timeout: wait until the socket is readable and read again.
                // A connection that did die reads as closed on the next attempt.
                network.Socket.Poll(-1, SelectMode.SelectRead);
            }
        }

        Volatile.Write(ref _reads, _reads + 1);
        return read;
    }

    /// <summary>A "timed out" or "would block" from a read on a socket with no receive timeout: not a real timeout.</summary>
    private static bool IsSpuriousTimeout(IOException ex, Socket socket) =>
        ex.InnerException is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock } &&
        socket.ReceiveTimeout == 0;

    /// <summary>True when a whole frame (header and body) is already in the buffer, so reading it will not block.</summary>
    public bool HasBufferedFrame()
    {
        var buffered = _end - _start;
        if (buffered < Pocket.Protocol.FrameHeader.Size)
        {
            return false;
        }

        var length = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(_buffer.AsSpan(_start + 8));
        return length >= 0 && buffered - Pocket.Protocol.FrameHeader.Size >= length;
    }

    public void Skip(long count)
    {
        Span<byte> scratch = stackalloc byte[4096];
        while (count > 0)
        {
            var n = (int)Math.Min(scratch.Length, count);
            ReadExactly(scratch[..n]);
            count -= n;
        }
    }
}
