using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>A loop that is held up in the middle of its epoll batch does not keep the rest of the batch waiting.</summary>
public sealed class LoopStealingTests
{
    private const uint First = 1;
    private const uint Second = 2;
    private const uint Held = 3;
    private const uint Free = 100;

    [Fact]
    public async Task AnotherLoopServesWhatAHeldLoopTookFromEpollAndHasNotStarted()
    {
        var handler = new GatedHandler(First, Second, Held);
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);

        // Every connection is served once first, so each is in the epoll set before the test starts.
        var sockets = new Socket[4];
        for (var i = 0; i < sockets.Length; i++)
        {
            sockets[i] = await ConnectRawAsync(server.EndPoint);
            await SendRawAsync(sockets[i], Header(Opcode.Ping, 0, requestId: Free + 1 + (uint)i));
            await ReadReplyIdsAsync(sockets[i], 1, cts.Token);
        }

        using var first = sockets[0];
        using var second = sockets[1];
        using var held = sockets[2];
        using var free = sockets[3];

        // Both loops held in a handler: the second request can only be taken by the loop the first one is not holding.
        await SendRawAsync(first, Header(Opcode.Ping, 0, requestId: First));
        handler.WaitEntered(First, cts.Token);
        await SendRawAsync(second, Header(Opcode.Ping, 0, requestId: Second));
        handler.WaitEntered(Second, cts.Token);

        // Two requests become ready while no loop waits on epoll; the first loop let go takes both in one batch, in the
        // order they arrived, and is held again by the first of them.
        await SendRawAsync(held, Header(Opcode.Ping, 0, requestId: Held));
        await SendRawAsync(free, Header(Opcode.Ping, 0, requestId: Free));
        handler.Open(First);
        handler.WaitEntered(Held, cts.Token);

        // The other loop, let go, takes the request its held peer has not started. Without that it waits in that
        // loop's batch until the held request is let go, which this test does only after the reply.
        handler.Open(Second);
        Assert.Equal(Free, (await ReadReplyIdsAsync(free, 1, cts.Token)).Single());

        handler.Open(Held);
        Assert.Equal(Held, (await ReadReplyIdsAsync(held, 1, cts.Token)).Single());
        Assert.Equal(First, (await ReadReplyIdsAsync(first, 1, cts.Token)).Single());
        Assert.Equal(Second, (await ReadReplyIdsAsync(second, 1, cts.Token)).Single());
    }

    /// <summary>Answers Ping; a request with a gated id waits in the handler, on its loop, until the test opens its gate.</summary>
    private sealed class GatedHandler(params uint[] gated) : IFrameHandler
    {
        private readonly Dictionary<uint, (ManualResetEventSlim Entered, ManualResetEventSlim Open)> _gates =
            gated.ToDictionary(id => id, _ => (new ManualResetEventSlim(), new ManualResetEventSlim()));

        public void WaitEntered(uint id, CancellationToken cancellationToken) =>
            Assert.True(_gates[id].Entered.Wait(TimeSpan.FromSeconds(30), cancellationToken), $"request {id} never reached the handler");

        public void Open(uint id) => _gates[id].Open.Set();

        public void Handle(FrameContext frame)
        {
            if (_gates.TryGetValue(frame.Header.RequestId, out var gate))
            {
                gate.Entered.Set();
                gate.Open.Wait(TimeSpan.FromSeconds(60));
            }

            frame.Reply(Status.Ok);
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
