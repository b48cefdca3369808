using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>Helpers shared by the end-to-end tests: clusters, bounded waits, streams and raw frames.</summary>
internal static class TestSupport
{
    /// <summary>
    /// A dram storage node (not started) of <paramref name="capacity"/> bytes for two metadata servers on loopback, beating
    /// every 100 ms, whose requests to them time out only after 30 minutes: what lets its rounds go on is the node's own
    /// bounds (a registration's, a share request's), not the request timeout.
    /// </summary>
    public static Pocket.StorageServer.StorageServer PatientNode(int metadataPort, int otherMetadataPort, JobToken token, long capacity) =>
        new(
            new Pocket.StorageServer.StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", metadataPort),
                OtherMetadata = [new DnsEndPoint("127.0.0.1", otherMetadataPort)],
                Capacity = capacity,
                HeartbeatInterval = TimeSpan.FromMilliseconds(100),
                ClusterToken = token,
                DramHeadroom = 0,
                MetadataConnection = new Pocket.Networking.FrameConnectionOptions { RequestTimeout = TimeSpan.FromMinutes(30) },
                Listener = new Pocket.Networking.FrameServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
            },
            Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);

    /// <summary>Upper bound for any single network wait in a test; generous for a loaded 2-core machine.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A cluster for data-path tests. The node timeout is long so a busy machine never declares a node dead
    /// in the middle of a test that is not about liveness.
    /// </summary>
    public static Task<PocketCluster> StartClusterAsync(int nodes = 2, long capacity = 64L << 20, Func<PocketClusterOptions, PocketClusterOptions>? configure = null)
    {
        var options = new PocketClusterOptions
        {
            StorageNodes = nodes,
            NodeCapacity = capacity,
            PreTouchMemory = false,
            NodeTimeout = TimeSpan.FromMinutes(5),
        };
        return PocketCluster.StartAsync(configure is null ? options : configure(options));
    }

    public static CancellationTokenSource Timeout(int seconds = 60) => new(TimeSpan.FromSeconds(seconds));

    /// <summary>Polls <paramref name="condition"/> until it holds; fails the test after <see cref="Patience"/>.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        var delay = 5;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting until {what}");
            }

            await Task.Delay(delay);
            delay = Math.Min(delay * 2, 200);
        }
    }

    public static async Task<long> UsedAsync(PocketAdminClient admin)
    {
        var nodes = await admin.GetNodesAsync();
        return nodes.Where(n => n.State != NodeState.Dead).Sum(n => n.Used);
    }

    public static Task WaitForUsedAsync(PocketAdminClient admin, long expected) =>
        WaitUntilAsync(async () => await UsedAsync(admin) == expected, $"the nodes use {expected} bytes");

    public static string Hash(ReadOnlySpan<byte> data) => Convert.ToHexString(SHA256.HashData(data));

    /// <summary>Deterministic bytes for a key, so any reader can tell what a writer stored.</summary>
    public static byte[] DataFor(string key, int length)
    {
        var data = new byte[length];
        new Random(StringComparer.Ordinal.GetHashCode(key) ^ length).NextBytes(data);
        return data;
    }

    /// <summary>Reads <paramref name="count"/> header-only replies from a raw socket; asserts each is OK; returns their request ids.</summary>
    public static async Task<uint[]> ReadReplyIdsAsync(Socket socket, int count, CancellationToken cancellationToken)
    {
        var bytes = new byte[count * FrameHeader.Size];
        var received = 0;
        while (received < bytes.Length)
        {
            var n = await socket.ReceiveAsync(bytes.AsMemory(received), SocketFlags.None, cancellationToken);
            Assert.True(n > 0, "the server closed the connection");
            received += n;
        }

        var ids = new uint[count];
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(Status.Ok, FrameHeader.TryRead(bytes.AsSpan(i * FrameHeader.Size), int.MaxValue, out var header));
            Assert.Equal(Status.Ok, header.Status);
            ids[i] = header.RequestId;
        }

        return ids;
    }

    public static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static async Task<byte[]> ReadAllAsync(PocketJob job, string key)
    {
        using var cts = Timeout();
        return await job.GetAsync(key, cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token);
    }

    // Raw frames, for feeding servers bytes that no client would send.

    public static byte[] Header(Opcode opcode, int bodyLength, uint requestId = 7, JobToken token = default, FrameFlags flags = FrameFlags.None, byte version = FrameHeader.CurrentVersion, ushort reserved = 0)
    {
        var bytes = new byte[FrameHeader.Size];
        new FrameHeader(opcode, flags, Status.Ok, bodyLength, requestId, token).Write(bytes);
        bytes[0] = version;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(6), reserved);
        return bytes;
    }

    /// <summary>Frames back to back in one buffer, a pipelined burst: frame <c>i</c> is <paramref name="frame"/>(i).</summary>
    public static byte[] Burst(int count, Func<int, byte[]> frame) => [.. Enumerable.Range(0, count).SelectMany(frame)];

    public static async Task<Socket> ConnectRawAsync(IPEndPoint endPoint)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var cts = Timeout(30);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, endPoint.Port), cts.Token);
        return socket;
    }

    /// <summary>Sends bytes; a reset by a server that already gave up on the connection counts as sent.</summary>
    public static async Task SendRawAsync(Socket socket, byte[] bytes)
    {
        try
        {
            using var cts = Timeout(30);
            var sent = 0;
            while (sent < bytes.Length)
            {
                sent += await socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None, cts.Token);
            }
        }
        catch (SocketException)
        {
        }
    }

    /// <summary>
    /// Reads one reply frame (header and body). Null when the server closed the connection (or reset it)
    /// before a whole frame arrived.
    /// </summary>
    public static async Task<(FrameHeader Header, byte[] Body)?> ReadReplyAsync(Socket socket)
    {
        using var cts = Timeout(30);
        var headerBytes = new byte[FrameHeader.Size];
        if (!await ReadExactlyAsync(socket, headerBytes, cts.Token))
        {
            return null;
        }

        Assert.Equal(Status.Ok, FrameHeader.TryRead(headerBytes, int.MaxValue, out var header));
        Assert.True(header.IsReply, "a server frame must carry the reply flag");
        var body = new byte[header.BodyLength];
        if (!await ReadExactlyAsync(socket, body, cts.Token))
        {
            return null;
        }

        return (header, body);
    }

    /// <summary>True when the server closes (or resets) the connection without sending anything more.</summary>
    public static async Task<bool> IsClosedAsync(Socket socket)
    {
        using var cts = Timeout(30);
        var one = new byte[1];
        try
        {
            return await socket.ReceiveAsync(one, SocketFlags.None, cts.Token) == 0;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Fills <paramref name="buffer"/> from the socket; false when the peer closed (or reset) before it was full.</summary>
    internal static async Task<bool> ReadExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < buffer.Length)
        {
            int n;
            try
            {
                n = await socket.ReceiveAsync(buffer[filled..], SocketFlags.None, cancellationToken);
            }
            catch (SocketException)
            {
                return false;
            }

            if (n == 0)
            {
                return false;
            }

            filled += n;
        }

        return true;
    }
}

/// <summary>
/// A read-only stream of <see cref="Length"/> deterministic bytes: a random pattern whose length is not a power
/// of two, so a block or extent read from the wrong place never matches by accident. Memory use is one pattern.
/// </summary>
internal sealed class PatternStream : Stream
{
    private const int PatternLength = (1 << 20) - 17;
    private readonly byte[] _pattern;
    private readonly bool _seekable;
    private readonly int _maxRead;
    private long _position;

    public PatternStream(long length, int seed, bool seekable = true, int maxRead = int.MaxValue)
    {
        _pattern = TestSupport.RandomBytes(PatternLength, seed);
        Length = length;
        _seekable = seekable;
        _maxRead = maxRead;
    }

    public override long Length { get; }

    public override bool CanRead => true;

    public override bool CanSeek => _seekable;

    public override bool CanWrite => false;

    public override long Position
    {
        get => _seekable ? _position : throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>SHA-256 of the whole stream, computed independently of any Pocket code.</summary>
    public static string HashOf(long length, int seed)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var stream = new PatternStream(length, seed);
        var buffer = new byte[1 << 20];
        int n;
        while ((n = stream.Read(buffer)) > 0)
        {
            hash.AppendData(buffer.AsSpan(0, n));
        }

        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>The bytes at [offset, offset+count) of a stream with this seed.</summary>
    public static byte[] Slice(int seed, long offset, int count)
    {
        var pattern = TestSupport.RandomBytes(PatternLength, seed);
        var result = new byte[count];
        for (var i = 0; i < count; i++)
        {
            result[i] = pattern[(offset + i) % PatternLength];
        }

        return result;
    }

    public override int Read(Span<byte> buffer)
    {
        var count = (int)Math.Min(Math.Min(buffer.Length, _maxRead), Length - _position);
        var done = 0;
        while (done < count)
        {
            var at = (int)(_position % PatternLength);
            var n = Math.Min(count - done, PatternLength - at);
            _pattern.AsSpan(at, n).CopyTo(buffer[done..]);
            done += n;
            _position += n;
        }

        return count;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(Read(buffer.AsSpan(offset, count)));

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>Wraps a stream and hides its length (as a network or pipe stream would), optionally in small reads.</summary>
internal sealed class UnknownLengthStream(Stream inner, int maxRead = int.MaxValue) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, maxRead));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        inner.ReadAsync(buffer[..Math.Min(buffer.Length, maxRead)], cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        inner.ReadAsync(buffer, offset, Math.Min(count, maxRead), cancellationToken);

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>
/// A stream of unknown length that hands out <c>before</c> bytes, signals <see cref="Reached"/>, then waits for
/// <see cref="Release"/> (or fails with <see cref="Fail"/>) before handing out the rest. Lets a test act while a
/// put is provably half done.
/// </summary>
internal sealed class GatedStream(Stream inner, long before) : Stream
{
    private readonly TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _position;

    public Task Reached => _reached.Task;

    public void Release() => _gate.TrySetResult();

    public void Fail(Exception error) => _gate.TrySetException(error);

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position >= before)
        {
            _reached.TrySetResult();
            await _gate.Task.WaitAsync(cancellationToken);
        }
        else
        {
            buffer = buffer[..(int)Math.Min(buffer.Length, before - _position)];
        }

        var n = await inner.ReadAsync(buffer, cancellationToken);
        _position += n;
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>A write-only sink that keeps only the SHA-256 and the byte count of what was written.</summary>
internal sealed class HashingStream : Stream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _written;

    public string Hash => Convert.ToHexString(_hash.GetCurrentHash());

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => _written;

    public override long Position
    {
        get => _written;
        set => throw new NotSupportedException();
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _hash.AppendData(buffer);
        _written += buffer.Length;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

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

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash.Dispose();
        }

        base.Dispose(disposing);
    }
}
