using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Client;
using Pocket.Metadata;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// A server stopped while a handler is held in its turn past the stop timeout (a slow device, a debugger pause, a
/// loaded machine): the peer sees the close at once, but the held handler keeps what it works on until it returns: its
/// connection's buffers (never handed back to the pool under it), and a metadata server's inline slots (never unmapped
/// under a get). The timeout is zero here, so the stop never waits for the held handler.
/// </summary>
public sealed class StopSafetyTests
{
    private const uint Held = 9;

    [Fact]
    public async Task AHandlerHeldPastTheStopReadsItsOwnBodyAndItsThreadClosesTheConnection()
    {
        var handler = new HoldingHandler();
        var server = new FrameServer("test", new FrameServerOptions { EventLoops = 2, StopTimeout = TimeSpan.Zero }, handler, NullLogger.Instance);
        server.Start();
        using var cts = Timeout(60);
        var body = RandomBytes(1000, seed: 3);
        using var held = await ConnectRawAsync(server.EndPoint);
        await SendRawAsync(held, [.. Header(Opcode.Ping, body.Length, requestId: Held), .. body]);
        await handler.Entered.Task.WaitAsync(cts.Token);

        // Other connections at work at the stop, whose buffers go back to the pool: the held one's must not be among them.
        var others = new List<System.Net.Sockets.Socket>();
        for (var i = 0; i < 8; i++)
        {
            var other = await ConnectRawAsync(server.EndPoint);
            others.Add(other);
            await SendRawAsync(other, [.. Header(Opcode.Ping, body.Length, requestId: 100 + (uint)i), .. RandomBytes(body.Length, seed: 100 + i)]);
            await ReadReplyIdsAsync(other, 1, cts.Token);
        }

        server.Dispose();

        // The held connection's peer sees the close without waiting for its handler.
        Assert.True(await IsClosedAsync(held));
        Assert.False(server.Stopped.IsCompleted, "the held handler's loop has not left");

        // Pool buffers of the size a connection's receive buffer has, written over: a held body read from a returned
        // buffer would read these bytes (or a closed connection's null buffer).
        for (var i = 0; i < 16; i++)
        {
            var rented = System.Buffers.ArrayPool<byte>.Shared.Rent(FrameHeader.Size + FrameContext.MaxPrefix + FrameContext.InlineBody);
            rented.AsSpan().Fill(0xEE);
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }

        handler.Release.Set();
        var read = await handler.Done.Task.WaitAsync(cts.Token);
        Assert.Equal(Hash(body), Hash(read));

        // The held handler's thread closes its connection when the handler returns; then every thread has left.
        await server.Stopped.WaitAsync(cts.Token);
        Assert.Equal(0, server.ConnectionCount);
        foreach (var other in others)
        {
            other.Dispose();
        }
    }

    [Fact]
    public async Task AGetHeldPastTheStopOfTheMetadataServerReadsMappedSlotsThatAreUnmappedAfterIt()
    {
        var holder = new HoldingRequest(Opcode.Get);
        var cluster = await StartClusterAsync(nodes: 1, configure: o => o with
        {
            Listener = o.Listener with { StopTimeout = TimeSpan.Zero },
            MetadataWrapHandler = holder.Wrap,
        });
        using var cts = Timeout(120);
        var client = await cluster.ConnectAsync(cancellationToken: cts.Token);
        var metadata = cluster.Metadata;
        try
        {
            var job = await cluster.Admin(client).RegisterJobAsync("held", cts.Token);

            // Large enough for a slot of whole pages in a mapped slab, small enough to be kept inline.
            var data = RandomBytes(16 << 10, seed: 5);
            await job.PutAsync("k", data, cancellationToken: cts.Token);
            Assert.True(metadata.Inline.SlotBytesInUse > 0, "the object is in a slot");

            holder.Arm();
            var get = job.GetAsync("k", cancellationToken: cts.Token).AsTask();
            await holder.Entered.Task.WaitAsync(cts.Token);
            await cluster.DisposeAsync();

            // The get has not looked its object up yet: the slabs stay mapped until it is done.
            Assert.True(metadata.Inline.MappedBytes > 0, "the slabs are still mapped under the held get");
            holder.Release.Set();
            Assert.Equal(Status.Ok, await holder.Done.Task.WaitAsync(cts.Token));
            await metadata.InlineReleased.WaitAsync(cts.Token);
            Assert.Equal(0, metadata.Inline.MappedBytes);

            // The client saw its connection close (the reply had nowhere to go).
            await Assert.ThrowsAnyAsync<Exception>(() => get);
        }
        finally
        {
            holder.Release.Set();
            await client.DisposeAsync();
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public async Task ANodeReadHeldPastTheStopOfItsNodeStillReadsTheDevice()
    {
        var holder = new HoldingRequest(Opcode.ReadExtent);
        var cluster = await StartClusterAsync(nodes: 1, configure: o => o with
        {
            Listener = o.Listener with { StopTimeout = TimeSpan.Zero, WrapHandler = holder.Wrap },
            MetadataWrapHandler = inner => inner,
        });
        using var cts = Timeout(120);
        var client = await cluster.ConnectAsync(cancellationToken: cts.Token);
        var node = cluster.Nodes[0]!;
        try
        {
            var job = await cluster.Admin(client).RegisterJobAsync("held", cts.Token);

            // Larger than the inline limit: its bytes are on the node, in the DRAM device's memory.
            var data = RandomBytes(256 << 10, seed: 6);
            await job.PutAsync("k", data, cancellationToken: cts.Token);

            holder.Arm();
            var get = job.GetAsync("k", cancellationToken: cts.Token).AsTask();
            await holder.Entered.Task.WaitAsync(cts.Token);
            await cluster.DisposeAsync();
            Assert.False(node.MemoryReleased.IsCompleted, "the device is released under the held read");

            // Freed under it, the read found its device disposed (or read freed memory).
            holder.Release.Set();
            Assert.Equal(Status.Ok, await holder.Done.Task.WaitAsync(cts.Token));
            await node.MemoryReleased.WaitAsync(cts.Token);
            await Assert.ThrowsAnyAsync<Exception>(() => get);
        }
        finally
        {
            holder.Release.Set();
            await client.DisposeAsync();
            await cluster.DisposeAsync();
        }
    }

    /// <summary>Answers with the body; the request with the held id waits in the handler, on its loop, until released, and then reads its body.</summary>
    private sealed class HoldingHandler : IFrameHandler
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ManualResetEventSlim Release { get; } = new();

        public TaskCompletionSource<byte[]> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Handle(FrameContext frame)
        {
            if (frame.Header.RequestId != Held)
            {
                frame.Reply(Status.Ok, frame.ReadBody());
                return;
            }

            Entered.TrySetResult();
            Release.Wait(TimeSpan.FromSeconds(60));
            try
            {
                var body = frame.ReadBody().ToArray();
                Done.TrySetResult(body);
                frame.Reply(Status.Ok, body);
            }
            catch (Exception ex)
            {
                Done.TrySetException(ex);
                throw;
            }
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }

    /// <summary>Holds the first request of its opcode after <see cref="Arm"/> before the role's handler sees it, then reports its reply's status.</summary>
    private sealed class HoldingRequest(Opcode opcode)
    {
        private readonly Opcode _opcode = opcode;
        private int _armed;

        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ManualResetEventSlim Release { get; } = new();

        public TaskCompletionSource<Status> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Arm() => Volatile.Write(ref _armed, 1);

        public IFrameHandler Wrap(IFrameHandler inner) => new Wrapper(this, inner);

        private sealed class Wrapper(HoldingRequest holder, IFrameHandler inner) : IFrameHandler
        {
            public void Handle(FrameContext frame)
            {
                if (frame.Header.Opcode != holder._opcode || Interlocked.Exchange(ref holder._armed, 0) == 0)
                {
                    inner.Handle(frame);
                    return;
                }

                holder.Entered.TrySetResult();
                holder.Release.Wait(TimeSpan.FromSeconds(60));
                try
                {
                    inner.Handle(frame);
                    holder.Done.TrySetResult(frame.ReplyStatus);
                }
                catch (Exception ex)
                {
                    holder.Done.TrySetException(ex);
                    throw;
                }
            }

            public void OnDisconnected(FrameContext connection) => inner.OnDisconnected(connection);

            public bool HoldsState(FrameContext connection) => inner.HoldsState(connection);

            public int PrefixLength(in FrameHeader header) => inner.PrefixLength(header);

            public FrameAdmission Admit(FrameContext frame) => inner.Admit(frame);

            public Span<byte> BodyDestination(FrameContext frame, int received) => inner.BodyDestination(frame, received);

            public void Abandon(FrameContext frame) => inner.Abandon(frame);
        }
    }
}
