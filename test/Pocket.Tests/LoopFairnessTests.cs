using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>How an event loop shares itself between connections.</summary>
public sealed class LoopFairnessTests
{
    private const uint Gate = 1;
    private const uint Pipelined = 2_000;
    private const uint Other = 1_000_000;

    [Fact]
    public async Task APipeliningConnectionYieldsTheLoopToAnotherConnectionsRequestWithinATurn()
    {
        var handler = new CountingHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);

        // The other connection is set up and served once first, so it is watched by the loop before the test starts.
        using var other = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(other, Header(Opcode.Ping, 0, requestId: Other + 1));
        await ReadReplyIdsAsync(other, 1, cts.Token);

        // One send of many frames: the loop's first read of it holds far more than a turn's worth. Handling the first
        // holds the only loop until the other connection's request has been sent.
        using var busy = await ConnectRawAsync(server.EndPoint);
        var frames = new byte[Pipelined * FrameHeader.Size];
        for (var i = 0u; i < Pipelined; i++)
        {
            Header(Opcode.Ping, 0, requestId: Gate + i).CopyTo(frames, i * FrameHeader.Size);
        }

        await SendRawAsync(busy, frames);
        Assert.True(handler.GateEntered.Wait(TimeSpan.FromSeconds(30), cts.Token), "the first pipelined frame never reached the handler");
        await SendRawAsync(other, Header(Opcode.Ping, 0, requestId: Other));
        handler.OpenGate.Set();

        await ReadReplyIdsAsync(other, 1, cts.Token);
        await ReadReplyIdsAsync(busy, (int)Pipelined, cts.Token);

        // Before the fix the loop handled every frame it had read (and read on, up to 16 times) before anyone else.
        Assert.InRange(handler.BusyFramesBeforeOther, 1, 2 * LoopConnection.FramesPerTurn);
        Assert.Equal((int)Pipelined, handler.BusyFrames);
    }

    /// <summary>Answers Ping; counts the busy connection's frames, and how many it had when the other one's came.</summary>
    private sealed class CountingHandler : IFrameHandler
    {
        private int _busyFrames;

        public ManualResetEventSlim GateEntered { get; } = new();

        public ManualResetEventSlim OpenGate { get; } = new();

        public int BusyFrames => Volatile.Read(ref _busyFrames);

        public int BusyFramesBeforeOther { get; private set; } = -1;

        public void Handle(FrameContext frame)
        {
            var id = frame.Header.RequestId;
            if (id == Other)
            {
                BusyFramesBeforeOther = BusyFrames;
            }
            else if (id < Other)
            {
                Interlocked.Increment(ref _busyFrames);
                if (id == Gate)
                {
                    GateEntered.Set();
                    OpenGate.Wait(TimeSpan.FromSeconds(30));
                }
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
