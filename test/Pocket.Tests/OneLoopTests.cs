using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A server with a single event loop: no second loop can pick up an event the first one lost, and its clock is held
/// still, so no timer can repair a stalled connection either. Every request must be answered by the loop's own
/// wake-ups: an epoll event, an owed turn, or a connection handed back by the I/O pool.
/// </summary>
public sealed class OneLoopTests
{
    private const int Connections = 8;
    private const int SequentialRequests = 500;
    private const int Pipelined = 5_000;

    // More than a pool turn reads (16 reads of the receive buffer), so the pool must hand the connection back.
    private const int BlockingStream = 100_000;

    [Fact]
    public async Task OneLoopAnswersEverySequentialAndPipelinedRequestWithItsClockHeldStill()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var handler = new PingHandler();
        using var server = new FrameServer("one", new FrameServerOptions { EventLoops = 1, TimeProvider = clock }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(180);

        // Ping-pong on several connections at once (the shape of a function's gets), while one connection pipelines
        // far more frames than a turn handles: the loop owes that one turns and must still sleep for the others' input.
        var sequential = Enumerable.Range(0, Connections).Select(c => Task.Run(async () =>
        {
            using var socket = await ConnectRawAsync(server.EndPoint);
            for (var i = 0; i < SequentialRequests; i++)
            {
                var id = (uint)(c * SequentialRequests + i + 1);
                await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: id));
                Assert.Equal(new[] { id }, await ReadReplyIdsAsync(socket, 1, cts.Token));
            }
        }, cts.Token)).ToList();
        var pipelined = Task.Run(async () =>
        {
            using var socket = await ConnectRawAsync(server.EndPoint);
            var frames = Frames(Pipelined, first: 1_000_000);
            var sending = SendRawAsync(socket, frames);
            var ids = await ReadReplyIdsAsync(socket, Pipelined, cts.Token);
            await sending;
            Assert.Equal(Enumerable.Range(1_000_000, Pipelined).Select(i => (uint)i), ids);
        }, cts.Token);

        await Task.WhenAll([.. sequential, pipelined]).WaitAsync(cts.Token);

        // Then a pipeline alone: once its input is all in the socket no event comes for it, so only the turns the loop
        // owes it (an epoll_wait that does not sleep while it owes any) get its later frames read.
        using (var alone = await ConnectRawAsync(server.EndPoint))
        {
            await SendRawAsync(alone, Frames(Pipelined, first: 2_000_000));
            Assert.Equal(Enumerable.Range(2_000_000, Pipelined).Select(i => (uint)i), await ReadReplyIdsAsync(alone, Pipelined, cts.Token));
        }

        Assert.Equal(Connections * SequentialRequests + 2 * Pipelined, handler.Handled);
    }

    [Fact]
    public async Task OneLoopServesOthersWhileTheIoPoolHandsABlockingStreamBack()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var handler = new PingHandler { BlockingFrom = 1_000_000 };
        using var server = new FrameServer("one", new FrameServerOptions { EventLoops = 1, IoThreads = 1, TimeProvider = clock }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(180);

        // Every frame of the busy connection runs on the I/O pool, which hands the connection back to the only loop
        // whenever a pool turn ends with input left; the loop answers another connection's pings meanwhile.
        using var busy = await ConnectRawAsync(server.EndPoint);
        var sending = SendRawAsync(busy, Frames(BlockingStream, first: 1_000_000));
        var reading = ReadReplyIdsAsync(busy, BlockingStream, cts.Token);
        using var other = await ConnectRawAsync(server.EndPoint);
        for (var i = 1u; i <= SequentialRequests; i++)
        {
            await SendRawAsync(other, Header(Opcode.Ping, 0, requestId: i));
            Assert.Equal(new[] { i }, await ReadReplyIdsAsync(other, 1, cts.Token));
        }

        var ids = await reading;
        await sending;
        Assert.Equal(Enumerable.Range(1_000_000, BlockingStream).Select(i => (uint)i), ids);
        Assert.Equal(BlockingStream, handler.OnPool);
    }

    private static byte[] Frames(int count, int first)
    {
        var frames = new byte[count * FrameHeader.Size];
        for (var i = 0; i < count; i++)
        {
            Header(Opcode.Ping, 0, requestId: (uint)(first + i)).CopyTo(frames, i * FrameHeader.Size);
        }

        return frames;
    }

    /// <summary>Answers Ping; frames from <see cref="BlockingFrom"/> on say they block, so they run on the I/O pool.</summary>
    private sealed class PingHandler : IFrameHandler
    {
        private int _handled;
        private int _onPool;

        public uint BlockingFrom { get; init; } = uint.MaxValue;

        public int Handled => Volatile.Read(ref _handled);

        public int OnPool => Volatile.Read(ref _onPool);

        public int PrefixLength(in FrameHeader header) => header.RequestId >= BlockingFrom ? 0 : -1;

        public FrameAdmission Admit(FrameContext frame) => FrameAdmission.Blocking;

        public void Handle(FrameContext frame)
        {
            Interlocked.Increment(ref _handled);
            if (frame.Header.RequestId >= BlockingFrom && Thread.CurrentThread.Name?.Contains(" io ", StringComparison.Ordinal) == true)
            {
                Interlocked.Increment(ref _onPool);
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
