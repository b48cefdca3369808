using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// The server loops register each connection edge-triggered once: an event that comes while another thread owns the
/// connection is remembered by the connection, never lost, and input left unread on purpose is run without one.
/// </summary>
public sealed class EdgeTriggeredLoopTests
{
    private const uint Gate = 1;
    private const uint Late = 2;
    private const uint Probe = 1_000_000;

    [Fact]
    public async Task AFrameThatArrivesWhileItsConnectionIsHandledIsAnsweredAfterTheTurn()
    {
        var handler = new GatedHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);
        using var probe = await ConnectRawAsync(server.EndPoint);
        using var busy = await ConnectRawAsync(server.EndPoint);

        // The first frame holds its loop in the handler; the second arrives meanwhile, after the loop's only read. Its
        // event goes to the other loop, which finds the connection owned: only the owner's second look reads it.
        await SendRawAsync(busy, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.True(handler.GateEntered.Wait(TimeSpan.FromSeconds(30), cts.Token), "the first frame never reached the handler");
        await SendRawAsync(busy, Header(Opcode.Ping, 0, requestId: Late));

        // The other loop answers a probe sent after the late frame: it has taken the late frame's event by then (both
        // events are queued in the order sent, and loopback delivers within the send).
        await SendRawAsync(probe, Header(Opcode.Ping, 0, requestId: Probe));
        Assert.Equal(new[] { Probe }, await ReadReplyIdsAsync(probe, 1, cts.Token));
        handler.OpenGate.Set();

        Assert.Equal(new[] { Gate, Late }, await ReadReplyIdsAsync(busy, 2, cts.Token));
    }

    [Fact]
    public async Task ABlockingStreamThatOutlastsAPoolTurnIsHandedBackToTheLoops()
    {
        const int Frames = 100_000;
        var handler = new GatedHandler { BlockingFrames = true };
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2, IoThreads = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);
        using var busy = await ConnectRawAsync(server.EndPoint);

        // Every frame is handled on the I/O pool, which reads on until a turn's reads are used up with input still in
        // the socket: no event comes for that input, so the pool must hand the connection back to a loop.
        var frames = new byte[Frames * FrameHeader.Size];
        for (var i = 0; i < Frames; i++)
        {
            Header(Opcode.Ping, 0, requestId: (uint)(Late + i)).CopyTo(frames, i * FrameHeader.Size);
        }

        await SendRawAsync(busy, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.True(handler.GateEntered.Wait(TimeSpan.FromSeconds(30), cts.Token), "the first frame never reached the handler");
        var sending = Task.Run(() => SendRawAsync(busy, frames), cts.Token);
        handler.OpenGate.Set();

        var ids = await ReadReplyIdsAsync(busy, Frames + 1, cts.Token);
        await sending;
        Assert.Equal(Frames + 1, ids.Length);
        Assert.Equal(Gate + (uint)Frames, ids[^1]);
        Assert.Equal(Frames + 1, handler.OnPool);
    }

    [Fact]
    public async Task AFrameAndTheEndOfTheStreamThatArriveTogetherAreBothSeen()
    {
        var handler = new GatedHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);

        // Sent back to back, the frame and the FIN are usually one event: the read of the frame comes back short, and
        // no event follows for the end of the stream, which the loop must read on to.
        for (var i = 0; i < 50; i++)
        {
            using var socket = await ConnectRawAsync(server.EndPoint);
            await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: Probe));
            socket.Shutdown(SocketShutdown.Send);
            Assert.Equal(new[] { Probe }, await ReadReplyIdsAsync(socket, 1, cts.Token));
            Assert.Equal(0, await socket.ReceiveAsync(new byte[1], SocketFlags.None, cts.Token));
        }

        while (server.ConnectionCount > 0)
        {
            await Task.Delay(20, cts.Token);
        }
    }

    [Fact]
    public async Task ConnectionsClosedWhileTheirInputStillArrivesLeaveTheServerServing()
    {
        var handler = new GatedHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(120);

        // A frame with an unknown version closes the connection on the server, while its peer goes on sending: events
        // for it keep coming (on either loop) as it is closed and leaves epoll.
        var bad = Header(Opcode.Ping, 0, version: 99);
        var pings = new byte[64 * FrameHeader.Size];
        for (var i = 0; i < 64; i++)
        {
            Header(Opcode.Ping, 0, requestId: Probe + (uint)i).CopyTo(pings, i * FrameHeader.Size);
        }

        await Parallel.ForAsync(0, 200, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cts.Token }, async (_, token) =>
        {
            using var socket = await ConnectRawAsync(server.EndPoint);
            try
            {
                await SendRawAsync(socket, pings);
                await SendRawAsync(socket, bad);
                for (var i = 0; i < 20; i++)
                {
                    await SendRawAsync(socket, pings);
                }
            }
            catch (SocketException)
            {
                // Closed by the server, as it should be.
            }
        });

        using var fresh = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(fresh, Header(Opcode.Ping, 0, requestId: Gate));
        Assert.Equal(new[] { Gate }, await ReadReplyIdsAsync(fresh, 1, cts.Token));
        fresh.Close();
        while (server.ConnectionCount > 0)
        {
            await Task.Delay(20, cts.Token);
        }
    }

    /// <summary>Answers Ping; the first frame waits for the gate; with <see cref="BlockingFrames"/> every frame runs on the I/O pool.</summary>
    private sealed class GatedHandler : IFrameHandler
    {
        private int _onPool;

        public bool BlockingFrames { get; init; }

        public ManualResetEventSlim GateEntered { get; } = new();

        public ManualResetEventSlim OpenGate { get; } = new();

        public int OnPool => Volatile.Read(ref _onPool);

        public int PrefixLength(in FrameHeader header) => BlockingFrames ? 0 : -1;

        public FrameAdmission Admit(FrameContext frame) => FrameAdmission.Blocking;

        public void Handle(FrameContext frame)
        {
            if (BlockingFrames && Thread.CurrentThread.Name?.Contains(" io ", StringComparison.Ordinal) == true)
            {
                Interlocked.Increment(ref _onPool);
            }

            if (frame.Header.RequestId == Gate)
            {
                GateEntered.Set();
                OpenGate.Wait(TimeSpan.FromSeconds(30));
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
