using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Work a handler asks to run after its reply (<see cref="FrameContext.AfterReplies"/>: a Commit's seal) runs once the
/// reply has been written, so a thread it wakes cannot hold the reply up.
/// </summary>
public sealed class AfterRepliesTests
{
    [Fact]
    public async Task WorkAfterTheRepliesRunsOnceTheClientCanReadTheReply()
    {
        var handler = new AfterHandler();
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(90);
        using var socket = await ConnectRawAsync(server.EndPoint);

        // The action waits for the client to have the reply: had it run before the reply was written, the reply would
        // have come only after its wait ran out.
        await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: 7));
        var reply = new byte[FrameHeader.Size];
        var received = 0;
        while (received < reply.Length)
        {
            var n = await socket.ReceiveAsync(reply.AsMemory(received), SocketFlags.None, cts.Token);
            Assert.True(n > 0, "the server closed the connection");
            received += n;
        }

        handler.ReplyRead.Set();
        Assert.True(await handler.Ran.Task.WaitAsync(cts.Token), "the action ran before the reply was written");
        Assert.Equal(1, handler.Runs);
    }

    [Fact]
    public async Task WorkAskedTwiceInATurnRunsOnceAndWorkOfAClosedConnectionStillRuns()
    {
        var handler = new AfterHandler { AskTwice = true, Wait = false };
        using var server = new FrameServer("test", new FrameServerOptions { EventLoops = 1 }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);
        using (var socket = await ConnectRawAsync(server.EndPoint))
        {
            // A ping and the end of the stream together: the connection closes in the turn that answers it.
            await SendRawAsync(socket, Header(Opcode.Ping, 0, requestId: 7));
            socket.Shutdown(SocketShutdown.Send);
            Assert.True(await handler.Ran.Task.WaitAsync(cts.Token));
        }

        while (server.ConnectionCount > 0)
        {
            await Task.Delay(20, cts.Token);
        }

        Assert.Equal(1, handler.Runs);
    }

    private sealed class AfterHandler : IFrameHandler
    {
        private static readonly Action<object?> After = static state => ((AfterHandler)state!).RunAfter();
        private int _runs;

        public bool AskTwice { get; init; }

        public bool Wait { get; init; } = true;

        public ManualResetEventSlim ReplyRead { get; } = new();

        public TaskCompletionSource<bool> Ran { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Runs => Volatile.Read(ref _runs);

        public int PrefixLength(in FrameHeader header) => -1;

        public FrameAdmission Admit(FrameContext frame) => FrameAdmission.Buffer;

        public void Handle(FrameContext frame)
        {
            frame.Reply(Status.Ok);
            frame.AfterReplies(After, this);
            if (AskTwice)
            {
                frame.AfterReplies(After, this);
            }
        }

        public void OnDisconnected(FrameContext connection)
        {
        }

        private void RunAfter()
        {
            Interlocked.Increment(ref _runs);
            Ran.TrySetResult(!Wait || ReplyRead.Wait(TimeSpan.FromSeconds(30)));
        }
    }
}
