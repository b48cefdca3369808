using System.Net;
using System.Net.Sockets;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A connection's table of requests in flight: the first request sits in a slot of its own (no lock), the others in a
/// dictionary, and whoever takes a request out (the reader, a cancellation, the timeout, a failure) completes it. Against
/// a bare socket playing the server, so the test decides which request is answered, when, and with what.
/// </summary>
public sealed class FrameConnectionTableTests
{
    private static readonly FrameConnectionOptions OneSecond = new() { RequestTimeout = TimeSpan.FromSeconds(1) };

    /// <summary>
    /// Many callers on one connection, each sending a body of its own that the server echoes at once, while some of
    /// them cancel (before, while and after their reply arrives) and the in-flight bound makes the rest wait: every
    /// completed request gets its own body back, never another's, whether it sat in the first slot or the dictionary,
    /// and cancelled requests' replies, late or not, reach nobody else.
    /// </summary>
    [Fact]
    public async Task EveryCallerGetsItsOwnReplyWhileOthersCancelAndReuseTheSlots()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var options = new FrameConnectionOptions { MaxInFlight = 4 };
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, options, timeout.Token);
        using var socket = await listener.AcceptSocketAsync(timeout.Token);
        await using var connection = await connecting;
        var echo = EchoAsync(socket, timeout.Token);

        const int callers = 16;
        const int rounds = 300;
        var cancelled = 0;
        var answered = 0;
        await Task.WhenAll(Enumerable.Range(0, callers).Select(caller => Task.Run(async () =>
        {
            var random = new Random(caller);
            var sent = new byte[8];
            var into = new byte[8];
            for (var round = 0; round < rounds; round++)
            {
                BitConverter.TryWriteBytes(sent, (caller * 1_000_000L) + round);
                using var cancel = new CancellationTokenSource();
                var send = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, sent, replyInto: random.Next(2) == 0 ? into : default, cancellationToken: cancel.Token).AsTask();

                // A third of the requests are cancelled: at once (often before the reply), or after a yield (racing it).
                switch (random.Next(6))
                {
                    case 0:
                        await cancel.CancelAsync();
                        break;
                    case 1:
                        await Task.Yield();
                        await cancel.CancelAsync();
                        break;
                }

                try
                {
                    var reply = await send.WaitAsync(timeout.Token);
                    var body = reply.Body.Length == 0 ? into.AsSpan(0, reply.DataLength) : reply.Body;
                    Assert.True(body.SequenceEqual(sent), $"caller {caller} round {round} got another request's reply");
                    Interlocked.Increment(ref answered);
                }
                catch (OperationCanceledException) when (cancel.IsCancellationRequested && !timeout.IsCancellationRequested)
                {
                    Interlocked.Increment(ref cancelled);
                }
            }
        })));

        Assert.Equal(callers * rounds, answered + cancelled);
        Assert.True(answered > 0 && cancelled > 0, $"{answered} answered, {cancelled} cancelled");
        Assert.True(connection.IsConnected);
        connection.Dispose();
        await echo;
    }

    /// <summary>
    /// A request that waits in the dictionary (another held the first slot when it was sent) and is never answered
    /// times out while newer requests keep taking the first slot and getting their replies.
    /// </summary>
    [Fact]
    public async Task ARequestBesideTheFirstSlotStillTimesOutWhileTheSlotKeepsBeingReused()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, OneSecond, timeout.Token);
        using var socket = await listener.AcceptSocketAsync(timeout.Token);
        await using var connection = await connecting;
        var header = new byte[FrameHeader.Size];

        var first = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        var firstId = await ReadRequestAsync(socket, header, timeout.Token);
        var stuck = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
        await ReadRequestAsync(socket, header, timeout.Token);
        await ReplyAsync(socket, firstId, new byte[] { 1 }, timeout.Token);
        await first.WaitAsync(timeout.Token);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!stuck.IsCompleted && clock.Elapsed < Patience)
        {
            var next = connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default).AsTask();
            await ReplyAsync(socket, await ReadRequestAsync(socket, header, timeout.Token), new byte[] { 2 }, timeout.Token);
            Assert.Equal(new byte[] { 2 }, (await next.WaitAsync(timeout.Token)).Body);
        }

        await Assert.ThrowsAsync<RequestTimeoutException>(() => stuck.WaitAsync(timeout.Token));
        Assert.True(connection.IsConnected);
    }

    /// <summary>
    /// The server closes the connection with requests in the first slot and in the dictionary: each fails with
    /// <see cref="ConnectionLostException"/> (none is left waiting), and a request sent afterwards fails as never sent.
    /// </summary>
    [Fact]
    public async Task AClosedConnectionFailsEveryRequestInFlightWhereverItWaits()
    {
        using var timeout = new CancellationTokenSource(Patience * 2);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var connecting = FrameConnection.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, new FrameConnectionOptions(), timeout.Token);
        var socket = await listener.AcceptSocketAsync(timeout.Token);
        await using var connection = await connecting;
        var header = new byte[FrameHeader.Size];

        using var token = new CancellationTokenSource();
        var inFlight = new List<Task<FrameReply>>();
        for (var i = 0; i < 4; i++)
        {
            // With and without a cancellable token, into a caller's buffer and not.
            inFlight.Add(connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default, replyInto: i % 2 == 0 ? new byte[16] : default, cancellationToken: i < 2 ? token.Token : default).AsTask());
            await ReadRequestAsync(socket, header, timeout.Token);
        }

        socket.Dispose();
        foreach (var request in inFlight)
        {
            await Assert.ThrowsAsync<ConnectionLostException>(() => request.WaitAsync(timeout.Token));
        }

        var after = await Assert.ThrowsAsync<ConnectionLostException>(async () => await connection.SendAsync(Opcode.Ping, FrameFlags.None, JobToken.None, default));
        Assert.True(after.NotSent);
        Assert.False(connection.IsConnected);
    }

    /// <summary>
    /// The in-flight bound: callers beyond it wait, a waiter that cancels gives up nothing it did not hold, and each
    /// slot given back lets exactly one waiter in.
    /// </summary>
    [Fact]
    public async Task TheInFlightGateAdmitsWaitersAsSlotsComeBackAndLosesNoneToACancelledWaiter()
    {
        using var timeout = new CancellationTokenSource(Patience);
        var gate = new AsyncGate(1);
        Assert.True(gate.TryEnter());
        Assert.False(gate.TryEnter());

        using var giveUp = new CancellationTokenSource();
        var quitter = gate.EnterAsync(giveUp.Token).AsTask();
        var first = gate.EnterAsync(timeout.Token).AsTask();
        var second = gate.EnterAsync(timeout.Token).AsTask();
        await giveUp.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => quitter);
        Assert.False(first.IsCompleted || second.IsCompleted);

        gate.Exit();
        var admitted = await Task.WhenAny(first, second).WaitAsync(timeout.Token);
        var waiting = admitted == first ? second : first;
        Assert.False(gate.TryEnter());
        Assert.False(waiting.IsCompleted);

        gate.Exit();
        await waiting.WaitAsync(timeout.Token);
        Assert.False(gate.TryEnter());
        gate.Exit();
        Assert.True(gate.TryEnter());
    }

    /// <summary>Answers every request with its own body, at once, until the client closes the connection.</summary>
    private static async Task EchoAsync(Socket socket, CancellationToken cancellationToken)
    {
        var header = new byte[FrameHeader.Size];
        try
        {
            while (await ReadExactlyAsync(socket, header, cancellationToken))
            {
                Assert.Equal(Status.Ok, FrameHeader.TryRead(header, int.MaxValue, out var request));
                var body = new byte[request.BodyLength];
                if (!await ReadExactlyAsync(socket, body, cancellationToken))
                {
                    return;
                }

                await ReplyAsync(socket, request.RequestId, body, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
        {
            // The client closed the connection under a reply.
        }
    }

    private static async Task<uint> ReadRequestAsync(Socket socket, byte[] header, CancellationToken cancellationToken)
    {
        Assert.True(await ReadExactlyAsync(socket, header, cancellationToken), "the client closed the connection");
        Assert.Equal(Status.Ok, FrameHeader.TryRead(header, 0, out var request));
        return request.RequestId;
    }

    private static async Task ReplyAsync(Socket socket, uint requestId, byte[] body, CancellationToken cancellationToken)
    {
        var frame = new byte[FrameHeader.Size + body.Length];
        new FrameHeader(Opcode.Ping, FrameFlags.Reply, Status.Ok, body.Length, requestId, JobToken.None).Write(frame);
        body.CopyTo(frame.AsSpan(FrameHeader.Size));
        var sent = 0;
        while (sent < frame.Length)
        {
            sent += await socket.SendAsync(frame.AsMemory(sent), SocketFlags.None, cancellationToken);
        }
    }
}
