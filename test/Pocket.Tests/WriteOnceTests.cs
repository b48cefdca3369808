using System.Net.Sockets;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Objects are write-once and appear atomically: a key holds one writer's complete bytes or nothing, a failed
/// writer leaves no trace, and delete-after-read hands an object to exactly one reader.
/// </summary>
public sealed class WriteOnceTests
{
    [Theory]
    [InlineData(100, 200)]
    [InlineData(100, 200_000)]
    [InlineData(200_000, 100)]
    [InlineData(200_000, 3_000_000)]
    public async Task PuttingAnExistingKeyFails(int first, int second)
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("once", cts.Token);
        var original = DataFor("original", first);
        await job.PutAsync("k", original, cancellationToken: cts.Token);
        var used = await UsedAsync(cluster.Admin(client));

        await Assert.ThrowsAsync<ObjectExistsException>(async () => await job.PutAsync("k", DataFor("second", second), cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectExistsException>(() => job.PutAsync("k", new MemoryStream(DataFor("second", second)), cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectExistsException>(() => job.PutAsync("k", new UnknownLengthStream(new MemoryStream(DataFor("second", second))), cancellationToken: cts.Token));

        Assert.Equal(Hash(original), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
        Assert.Equal(used, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(1, await job.CountAsync(cancellationToken: cts.Token));

        // After a delete the key is free again.
        await job.DeleteAsync("k", cancellationToken: cts.Token);
        var replacement = DataFor("replacement", second);
        await job.PutAsync("k", replacement, cancellationToken: cts.Token);
        Assert.Equal(Hash(replacement), Hash(await job.GetAsync("k", cancellationToken: cts.Token)));
    }

    [Theory]
    [InlineData(1_000)]
    [InlineData(2_000_000)]
    public async Task ConcurrentWritersOfOneKeyHaveExactlyOneWinner(int size)
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("race", cts.Token);
        const int writers = 16;
        var results = await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            try
            {
                await job.PutAsync("contested", DataFor($"writer{w}", size), cancellationToken: cts.Token);
                return w;
            }
            catch (ObjectExistsException)
            {
                return -1;
            }
        })));

        var winners = results.Where(w => w >= 0).ToList();
        Assert.Single(winners);
        Assert.Equal(Hash(DataFor($"writer{winners[0]}", size)), Hash(await job.GetAsync("contested", cancellationToken: cts.Token)));
        Assert.Equal(size <= 64 << 10 ? 0 : (size + 65_535) / 65_536 * 65_536, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task AnObjectBeingWrittenIsInvisibleUntilCommitted()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("atomic", cts.Token);
        const long size = 6 << 20;
        var stream = new GatedStream(new PatternStream(size, 6), 2 << 20);
        var put = job.PutAsync("growing", stream, cancellationToken: cts.Token);
        await stream.Reached.WaitAsync(cts.Token);

        Assert.Null(await job.LookupAsync("growing", cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await job.GetAsync("growing", cancellationToken: cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        await foreach (var entry in job.ListAsync(cancellationToken: cts.Token))
        {
            Assert.Fail($"listed {entry.Key} while it was being written");
        }

        // The key is taken while it is being written.
        await Assert.ThrowsAsync<ObjectExistsException>(async () => await job.PutAsync("growing", new byte[5], cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectExistsException>(async () => await job.PutAsync("growing", new byte[100_000], cancellationToken: cts.Token));

        stream.Release();
        await put.WaitAsync(cts.Token);
        var sink = new HashingStream();
        await job.GetAsync("growing", sink, cancellationToken: cts.Token);
        Assert.Equal(PatternStream.HashOf(size, 6), sink.Hash);
        Assert.Equal(1, await job.CountAsync(cancellationToken: cts.Token));
    }

    [Fact]
    public async Task AWriterWhoseSourceFailsLeavesNothing()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("broken-source", cts.Token);
        var stream = new GatedStream(new PatternStream(10 << 20, 10), 5 << 20);
        var put = job.PutAsync("broken", stream, cancellationToken: cts.Token);
        await stream.Reached.WaitAsync(cts.Token);
        Assert.True(await UsedAsync(cluster.Admin(client)) > 0);

        stream.Fail(new IOException("the source went away"));
        var error = await Assert.ThrowsAsync<IOException>(() => put.WaitAsync(cts.Token));
        Assert.Equal("the source went away", error.Message);

        Assert.Null(await job.LookupAsync("broken", cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
        await job.PutAsync("broken", new byte[100_000], cancellationToken: cts.Token);
        Assert.Equal(100_000, (await job.GetAsync("broken", cancellationToken: cts.Token)).Length);
    }

    [Fact]
    public async Task CancellingAPutLeavesNothing()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("cancelled", cts.Token);
        using var cancel = new CancellationTokenSource();
        var stream = new GatedStream(new PatternStream(10 << 20, 10), 3 << 20);
        var put = job.PutAsync("cancelled", stream, cancellationToken: cancel.Token);
        await stream.Reached.WaitAsync(cts.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => put.WaitAsync(cts.Token));

        Assert.Null(await job.LookupAsync("cancelled", cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
        await job.PutAsync("cancelled", new byte[100_000], cancellationToken: cts.Token);
    }

    [Fact]
    public async Task AClientDisposedMidPutLeavesNothingVisibleAndNoCapacityUsed()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var observer = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(observer).RegisterJobAsync("abandoned", cts.Token);

        var writer = await cluster.ConnectAsync();
        var stream = new GatedStream(new PatternStream(12 << 20, 12), 4 << 20);
        var put = writer.OpenJob(job.Id, job.Token).PutAsync("abandoned", stream, cancellationToken: cts.Token);
        await stream.Reached.WaitAsync(cts.Token);
        Assert.True(await UsedAsync(cluster.Admin(observer)) > 0);

        await writer.DisposeAsync();
        stream.Release();

        // The put fails, and the server drops the half-written object with the writer's connection.
        await Assert.ThrowsAnyAsync<Exception>(() => put.WaitAsync(cts.Token));
        await WaitForUsedAsync(cluster.Admin(observer), 0);
        Assert.Null(await job.LookupAsync("abandoned", cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, (await job.GetUsageAsync(cts.Token)).BlockBytes);

        await job.PutAsync("abandoned", new byte[200_000], cancellationToken: cts.Token);
        Assert.Equal(200_000, (await job.GetAsync("abandoned", cancellationToken: cts.Token)).Length);
    }

    /// <summary>
    /// A writer dies in the middle of a block write: the metadata server frees the space when the writer's connection
    /// to it closes, and a new put gets the same blocks while the node still holds them busy for the dead write (it has
    /// not seen that connection close yet: on a loaded machine it can come later). The node refuses the new write as
    /// stale, and the put tries it again until the node lets the blocks go, rather than failing.
    /// </summary>
    [Fact]
    public async Task APutMeetingBlocksStillBusyWithADeadWritersWriteWaitsForTheNodeToLetThemGo()
    {
        const int Size = 64 << 10;
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { SmallObjectThreshold = 16 << 10 });
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("busy", cts.Token);
        var node = cluster.Nodes[0]!;

        // The dead writer: a Create on a connection of its own, and half of the block's body sent to the node.
        var dying = await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions());
        var create = new BodyWriter();
        CreateRequest.Write(create, "dead", Size);
        var created = await dying.SendAsync(Opcode.Create, FrameFlags.None, job.Token, create.WrittenMemory, cancellationToken: cts.Token);
        Assert.True(created.IsOk, created.Message);
        Assert.True(CreateReply.TryRead(created.Body, out var open));
        var grant = open.Grants[0];
        var head = new BodyWriter();
        WriteExtentRequest.Write(head, grant, 0);
        var frame = new byte[FrameHeader.Size + head.WrittenMemory.Length + (grant.Length / 2)];
        new FrameHeader(Opcode.WriteExtent, FrameFlags.None, Status.Ok, head.WrittenMemory.Length + grant.Length, 1, JobToken.None).Write(frame);
        head.WrittenMemory.Span.CopyTo(frame.AsSpan(FrameHeader.Size));
        using var half = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await half.ConnectAsync(node.EndPoint, cts.Token);
        await half.SendAsync(frame, SocketFlags.None, cts.Token);

        // The node holds the block busy: a second write with the same grant is refused.
        await WaitUntilAsync(async () => await WriteAsync(grant) == Status.StaleGrant, "the node holds the block for the half-sent write");

        await dying.DisposeAsync();
        await WaitForUsedAsync(cluster.Admin(client), 0);
        var refused = node.StaleWrites;
        var data = DataFor("busy", Size);
        var put = job.PutAsync("fresh", data, cancellationToken: cts.Token).AsTask();

        // The put got the freed block and was refused at least once; then the node sees the dead write's connection close.
        await WaitUntilAsync(() => Task.FromResult(node.StaleWrites > refused || put.IsCompleted), "the put's write reaches the busy block");
        Assert.False(put.IsCompleted, "the put's write did not meet the dead write's block");
        half.Close();
        await put.WaitAsync(cts.Token);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("fresh", cancellationToken: cts.Token)));
        Assert.Equal(grant.Offset, (await job.LookupAsync("fresh", cts.Token))!.Blocks[0].Offset);

        async Task<Status> WriteAsync(ExtentGrant g)
        {
            await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", node.EndPoint.Port, new FrameConnectionOptions());
            var body = new BodyWriter();
            WriteExtentRequest.Write(body, g, 0);
            return (await connection.SendAsync(Opcode.WriteExtent, FrameFlags.None, JobToken.None, body.WrittenMemory, new byte[g.Length], cancellationToken: cts.Token)).Status;
        }
    }

    [Fact]
    public async Task ADisposedClientRefusesWork()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("closed", cts.Token);
        await job.PutAsync("k", new byte[100_000], cancellationToken: cts.Token);
        await client.DisposeAsync();

        // It must not quietly open new connections after it was closed.
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await job.CountAsync(cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await job.GetAsync("k", cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await job.PutAsync("j", new byte[100_000], cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => cluster.Admin(client).GetNodesAsync(cts.Token));
        await client.DisposeAsync();
    }

    [Theory]
    [InlineData(500)]
    [InlineData(3_000_000)]
    public async Task DeleteAfterReadReturnsTheDataOnceThenTheObjectIsGone(int size)
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("consume", cts.Token);
        var data = DataFor("once", size);
        await job.PutAsync("once", data, cancellationToken: cts.Token);

        Assert.Equal(Hash(data), Hash(await job.GetAsync("once", GetFlags.DeleteAfterRead, cts.Token)));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await job.GetAsync("once", cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await job.GetAsync("once", GetFlags.DeleteAfterRead, cts.Token));
        Assert.Null(await job.LookupAsync("once", cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));

        // Many readers racing: exactly one gets the bytes.
        await job.PutAsync("race", data, cancellationToken: cts.Token);
        var reads = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => Task.Run(async () =>
        {
            try
            {
                return await job.GetAsync("race", GetFlags.DeleteAfterRead, cts.Token);
            }
            catch (ObjectNotFoundException)
            {
                return null;
            }
        })));
        var winners = reads.Where(r => r is not null).ToList();
        Assert.Single(winners);
        Assert.Equal(Hash(data), Hash(winners[0]));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task RecursiveDeleteRemovesExactlyThePrefix()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("prune", cts.Token);
        string[] doomed = ["a/1", "a/2", "a/b/3", "a/b/c/4"];
        string[] kept = ["a", "ab/5", "a-b/6", "b/a/7"];
        foreach (var key in doomed.Concat(kept))
        {
            await job.PutAsync(key, DataFor(key, key.Length * 50_000), cancellationToken: cts.Token);
        }

        Assert.Equal(doomed.Length, await job.DeleteAsync("a/", recursive: true, cancellationToken: cts.Token));
        foreach (var key in doomed)
        {
            Assert.Null(await job.LookupAsync(key, cts.Token));
        }

        foreach (var key in kept)
        {
            Assert.Equal(Hash(DataFor(key, key.Length * 50_000)), Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        Assert.Equal(0, await job.DeleteAsync("a/", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(kept.Length, await job.CountAsync(cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await job.DeleteAsync("a/1", cancellationToken: cts.Token));

        // Everything, with the empty prefix; all space comes back.
        Assert.Equal(kept.Length, await job.DeleteAsync("", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }
}
