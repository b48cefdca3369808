using System.Net;
using System.Net.Sockets;
using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Tests;

/// <summary>
/// A caller whose token fires while it waits for a reply gets control back at once, and its reply buffer is never
/// written after that; the connection goes on serving. The server is a bare TcpListener the test answers by hand.
/// </summary>
public sealed class CancellationTests : IAsyncLifetime
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private Socket _server = null!;
    private FrameConnection _connection = null!;

    public async Task InitializeAsync()
    {
        _listener.Start();
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)_listener.LocalEndpoint).Port, new FrameConnectionOptions());
        _server = await _listener.AcceptSocketAsync().WaitAsync(TestSupport.Patience);
        _connection = await connecting.WaitAsync(TestSupport.Patience);
    }

    public async Task DisposeAsync()
    {
        await _connection.DisposeAsync();
        _server.Dispose();
        _listener.Stop();
    }

    [Fact]
    public async Task ACancelledWaitEndsAtOnceAndItsLateReplyIsSkipped()
    {
        var replyInto = new byte[64];
        using var cts = new CancellationTokenSource();
        var first = _connection.SendAsync(Opcode.Get, FrameFlags.None, JobToken.None, new byte[] { 1 }, replyInto: replyInto, cancellationToken: cts.Token).AsTask();
        var firstId = await ReadRequestAsync();
        Assert.False(first.IsCompleted);

        // The server never answers this one (yet): the cancelled caller does not wait for it.
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(TestSupport.Patience));
        replyInto.AsSpan().Fill(0xEE);

        // The late reply is skipped, not read into the buffer its caller has back; the next request works.
        await ReplyAsync(firstId, Enumerable.Repeat((byte)0x11, 64).ToArray());
        var secondInto = new byte[64];
        var second = _connection.SendAsync(Opcode.Get, FrameFlags.None, JobToken.None, new byte[] { 2 }, replyInto: secondInto).AsTask();
        await ReplyAsync(await ReadRequestAsync(), Enumerable.Repeat((byte)0x22, 8).ToArray());
        var reply = await second.WaitAsync(TestSupport.Patience);

        Assert.True(reply.IsOk);
        Assert.Equal(8, reply.DataLength);
        Assert.All(secondInto[..8], b => Assert.Equal(0x22, b));
        Assert.All(replyInto, b => Assert.Equal(0xEE, b));
        Assert.True(_connection.IsConnected);
    }

    [Fact]
    public async Task ACancelWhileTheReplyIsBeingReadIntoTheCallersBufferWaitsForTheWholeReply()
    {
        var replyInto = new byte[64 << 10];
        var body = TestSupport.RandomBytes(replyInto.Length, seed: 3);
        using var cts = new CancellationTokenSource();
        var call = _connection.SendAsync(Opcode.ReadExtent, FrameFlags.None, JobToken.None, new byte[] { 1 }, replyInto: replyInto, cancellationToken: cts.Token).AsTask();
        var id = await ReadRequestAsync();

        // Half the body: the reader is then writing into the caller's buffer and waits for the rest.
        await SendAsync([.. Header(id, body.Length), .. body.AsSpan(0, body.Length / 2)]);
        await TestSupport.WaitUntilAsync(() => Task.FromResult(Volatile.Read(ref replyInto[0]) == body[0]), "the reader fills the caller's buffer");

        // The cancellation finds the request taken by the reader: the caller keeps waiting, so the buffer is still the reader's.
        await cts.CancelAsync();
        Assert.False(call.IsCompleted);

        await SendAsync(body[(body.Length / 2)..]);
        var reply = await call.WaitAsync(TestSupport.Patience);
        Assert.True(reply.IsOk);
        Assert.Equal(body, replyInto);
    }

    private async Task<uint> ReadRequestAsync()
    {
        using var cts = TestSupport.Timeout(30);
        var headerBytes = new byte[FrameHeader.Size];
        await ReceiveExactlyAsync(headerBytes, cts.Token);
        Assert.Equal(Status.Ok, FrameHeader.TryRead(headerBytes, int.MaxValue, out var header));
        await ReceiveExactlyAsync(new byte[header.BodyLength], cts.Token);
        return header.RequestId;
    }

    private async Task ReceiveExactlyAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        for (var filled = 0; filled < buffer.Length;)
        {
            var n = await _server.ReceiveAsync(buffer[filled..], SocketFlags.None, cancellationToken);
            Assert.True(n > 0, "the client closed the connection");
            filled += n;
        }
    }

    private static byte[] Header(uint id, int bodyLength)
    {
        var header = new byte[FrameHeader.Size];
        new FrameHeader(Opcode.Get, FrameFlags.Reply, Status.Ok, bodyLength, id, JobToken.None).Write(header);
        return header;
    }

    private Task ReplyAsync(uint id, byte[] body) => SendAsync([.. Header(id, body.Length), .. body]);

    private Task SendAsync(byte[] bytes) => TestSupport.SendRawAsync(_server, bytes);
}
