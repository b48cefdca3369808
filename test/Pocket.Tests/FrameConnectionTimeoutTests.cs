using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// The request timeout and the reuse of a connection's request objects, against a bare socket playing the server,
/// so that the test decides which request is answered, when, and with what.
/// </summary>
public sealed class FrameConnectionTimeoutTests
{
    private static readonly FrameConnectionOptions OneSecond = new() { RequestTimeout = TimeSpan.FromSeconds(1) };

    /// <summary>
    /// The loops' tick looks at a connection's requests only once the oldest may be late (a bound kept as requests are
    /// sent). A request the server never answers must still time out while newer requests on the same connection keep
    /// being sent and answered: a bound moved forward by each new request would hide it for good.
    /// </summary>
    [Fact]
    public async Task ARequestStuckWhileOthersKeepCompletingStillTimesOut()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync(timeout.Token);
            var header = new byte[FrameHeader.Size];
            uint? ignored = null;
            while (await ReadExactlyAsync(socket, header, timeout.Token))
            {
                Assert.Equal(Status.Ok, FrameHeader.TryRead(header, 0, out var request));

                // The first request is never answered; every later one is, at once.
                if (ignored is null)
                {
                    ignored = request.RequestId;
                    continue;
                }

                await ReplyAsync(socket, request.RequestId, "ok", timeout.Token);
            }
        });

        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, OneSecond, timeout.Token);
        var stuck = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        var clock = Stopwatch.StartNew();
        do
        {
            var reply = await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: timeout.Token);
            Assert.Equal("ok", Encoding.UTF8.GetString(reply.Body));
        }
        while (!stuck.IsCompleted && clock.Elapsed < Patience);

        var late = await Assert.ThrowsAsync<RequestTimeoutException>(() => stuck.WaitAsync(timeout.Token));
        Assert.Equal(Opcode.Ping, late.Opcode);
        connection.Dispose();
        await server;
    }

    /// <summary>
    /// A request that timed out, or whose caller cancelled it, gives its pooled request object back to the connection,
    /// and the next request takes it. The server's late reply to the old request must be skipped, never delivered to
    /// the next request: each request gets its own reply.
    /// </summary>
    [Fact]
    public async Task ALateReplyToATimedOutOrCancelledRequestIsNotDeliveredToTheNextOne()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, OneSecond, timeout.Token);
        using var socket = await listener.AcceptSocketAsync(timeout.Token);
        await using var connection = await connecting;
        var header = new byte[FrameHeader.Size];

        // Timed out: the reply comes after the caller got RequestTimeoutException.
        var timedOut = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        var first = await ReadRequestAsync(socket, header, timeout.Token);
        await Assert.ThrowsAsync<RequestTimeoutException>(() => timedOut.WaitAsync(timeout.Token));
        await ReplyAsync(socket, first, "late reply to the timed-out request", timeout.Token);

        var next = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        await ReplyAsync(socket, await ReadRequestAsync(socket, header, timeout.Token), "second", timeout.Token);
        Assert.Equal("second", Encoding.UTF8.GetString((await next.WaitAsync(timeout.Token)).Body));

        // Cancelled: the reply comes after the caller got OperationCanceledException.
        using var cancel = new CancellationTokenSource();
        var cancelled = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: cancel.Token).AsTask();
        var third = await ReadRequestAsync(socket, header, timeout.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(timeout.Token));
        await ReplyAsync(socket, third, "late reply to the cancelled request", timeout.Token);

        // A reply read into the caller's buffer (a get's shape) is not overwritten by the late one either.
        var into = new byte[64];
        var last = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: into).AsTask();
        await ReplyAsync(socket, await ReadRequestAsync(socket, header, timeout.Token), "fourth", timeout.Token);
        var reply = await last.WaitAsync(timeout.Token);
        Assert.Equal("fourth", Encoding.UTF8.GetString(into.AsSpan(0, reply.DataLength)));
        Assert.True(connection.IsConnected);
    }

    /// <summary>
    /// A connection registers the first cancellable token it sees once for all the requests that come with it (no
    /// registration per request); cancelling it must fail every such request at once, while a request with another
    /// token is left alone and gets its reply, and the late replies of the cancelled ones are skipped.
    /// </summary>
    [Fact]
    public async Task CancellingATokenThatRequestsShareCancelsEachOfThemAndNoOther()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, new FrameConnectionOptions(), timeout.Token);
        using var socket = await listener.AcceptSocketAsync(timeout.Token);
        await using var connection = await connecting;
        var header = new byte[FrameHeader.Size];

        // One request answered with the shared token first: a registration kept across requests must not fire later.
        using var shared = new CancellationTokenSource();
        var answered = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: shared.Token).AsTask();
        await ReplyAsync(socket, await ReadRequestAsync(socket, header, timeout.Token), "answered", timeout.Token);
        Assert.Equal("answered", Encoding.UTF8.GetString((await answered.WaitAsync(timeout.Token)).Body));

        var sharing = new List<Task<FrameReply>>();
        var ids = new List<uint>();
        for (var i = 0; i < 3; i++)
        {
            sharing.Add(connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: shared.Token).AsTask());
            ids.Add(await ReadRequestAsync(socket, header, timeout.Token));
        }

        using var other = new CancellationTokenSource();
        var otherRequest = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: other.Token).AsTask();
        var otherId = await ReadRequestAsync(socket, header, timeout.Token);

        await shared.CancelAsync();
        foreach (var request in sharing)
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request.WaitAsync(timeout.Token));
        }

        Assert.False(otherRequest.IsCompleted);
        foreach (var id in ids)
        {
            await ReplyAsync(socket, id, "late", timeout.Token);
        }

        await ReplyAsync(socket, otherId, "other", timeout.Token);
        Assert.Equal("other", Encoding.UTF8.GetString((await otherRequest.WaitAsync(timeout.Token)).Body));

        // A request that comes with the cancelled shared token fails at once; the connection goes on.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, cancellationToken: shared.Token));
        var after = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        await ReplyAsync(socket, await ReadRequestAsync(socket, header, timeout.Token), "after", timeout.Token);
        Assert.Equal("after", Encoding.UTF8.GetString((await after.WaitAsync(timeout.Token)).Body));
    }

    private static async Task<uint> ReadRequestAsync(Socket socket, byte[] header, CancellationToken cancellationToken)
    {
        Assert.True(await ReadExactlyAsync(socket, header, cancellationToken), "the client closed the connection");
        Assert.Equal(Status.Ok, FrameHeader.TryRead(header, 0, out var request));
        return request.RequestId;
    }

    private static async Task ReplyAsync(Socket socket, uint requestId, string body, CancellationToken cancellationToken)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var frame = new byte[FrameHeader.Size + bytes.Length];
        new FrameHeader(Opcode.Ping, FrameFlags.Reply, Status.Ok, bytes.Length, requestId, JobToken.None).Write(frame);
        bytes.CopyTo(frame.AsSpan(FrameHeader.Size));
        await socket.SendAsync(frame, SocketFlags.None, cancellationToken);
    }
}
