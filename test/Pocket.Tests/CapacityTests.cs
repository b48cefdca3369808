using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Capacity is accounted exactly: a full node refuses cleanly, and deletes give every byte back.</summary>
public sealed class CapacityTests
{
    private const long NodeCapacity = 4 << 20;

    [Fact]
    public async Task FullNodeRefusesWithoutLeavingAPartialObject()
    {
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: NodeCapacity);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("full", cts.Token);
        var first = RandomBytes(3 << 20, 1);
        await job.PutAsync("first", first, cancellationToken: cts.Token);
        Assert.Equal(3 << 20, await UsedAsync(cluster.Admin(client)));
        var usage = await job.GetUsageAsync(cts.Token);

        // Too big for what is left, whichever way the bytes arrive.
        var second = RandomBytes(2 << 20, 2);
        var fromMemory = await Assert.ThrowsAsync<CapacityExceededException>(async () => await job.PutAsync("second", second, cancellationToken: cts.Token));
        Assert.Equal(Status.CapacityExceeded, fromMemory.Status);
        await Assert.ThrowsAsync<CapacityExceededException>(() => job.PutAsync("second", new MemoryStream(second), cancellationToken: cts.Token));
        await Assert.ThrowsAsync<CapacityExceededException>(() => job.PutAsync("second", new UnknownLengthStream(new MemoryStream(second)), cancellationToken: cts.Token));

        Assert.Null(await job.LookupAsync("second", cts.Token));
        Assert.Equal(1, await job.CountAsync(cancellationToken: cts.Token));
        var after = await job.GetUsageAsync(cts.Token);
        Assert.Equal((usage.Objects, usage.BlockBytes, usage.InlineBytes), (after.Objects, after.BlockBytes, after.InlineBytes));
        Assert.Equal(3 << 20, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(Hash(first), Hash(await job.GetAsync("first", cancellationToken: cts.Token)));

        // Deleting gives the space back, and the refused put now fits.
        Assert.Equal(1, await job.DeleteAsync("first", cancellationToken: cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
        await job.PutAsync("second", second, cancellationToken: cts.Token);
        Assert.Equal(Hash(second), Hash(await job.GetAsync("second", cancellationToken: cts.Token)));
        Assert.Equal(2 << 20, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task ANodeCanBeFilledToTheLastBlock()
    {
        // Objects of 20,000 bytes are one block each on the node when the client sends them there (16 KiB threshold).
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: NodeCapacity);
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { SmallObjectThreshold = 16 << 10 });
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("brim", cts.Token);
        var all = RandomBytes((int)NodeCapacity, 4);
        await job.PutAsync("all", all, cancellationToken: cts.Token);
        Assert.Equal(NodeCapacity, (await cluster.Admin(client).GetNodesAsync(cts.Token)).Single().Used);

        // Not one more block, but inline objects do not need one.
        await Assert.ThrowsAsync<CapacityExceededException>(async () => await job.PutAsync("one-block", new byte[20_000], cancellationToken: cts.Token));
        await job.PutAsync("inline", new byte[100], cancellationToken: cts.Token);
        Assert.Equal(Hash(all), Hash(await job.GetAsync("all", cancellationToken: cts.Token)));

        // Many small block objects fill the node exactly too, after the big one is gone.
        await job.DeleteAsync("all", cancellationToken: cts.Token);
        for (var i = 0; i < NodeCapacity / (64 << 10); i++)
        {
            await job.PutAsync($"b/{i}", DataFor($"b/{i}", 20_000 + i), cancellationToken: cts.Token);
        }

        await Assert.ThrowsAsync<CapacityExceededException>(async () => await job.PutAsync("b/extra", new byte[20_000], cancellationToken: cts.Token));
        Assert.Equal(NodeCapacity, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(DataFor("b/7", 20_007), await job.GetAsync("b/7", cancellationToken: cts.Token));
        Assert.Equal(NodeCapacity / (64 << 10), await job.DeleteAsync("b/", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task StreamOfUnknownLengthFitsWhenTheBytesFit()
    {
        // The client does not know the size up front; a 1 MiB stream must still fit a 4 MiB node.
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: NodeCapacity);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("piped", cts.Token);
        var data = RandomBytes((1 << 20) + 5, 5);
        await job.PutAsync("piped", new UnknownLengthStream(new MemoryStream(data)), cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("piped", cancellationToken: cts.Token)));
        Assert.Equal(((1 << 20) + 5 + 65_535) / 65_536 * 65_536, await UsedAsync(cluster.Admin(client)));

        // And the rest of the node is usable the same way, to the last block.
        var rest = RandomBytes((int)NodeCapacity - (((1 << 20) + 5 + 65_535) / 65_536 * 65_536), 6);
        await job.PutAsync("rest", new UnknownLengthStream(new MemoryStream(rest)), cancellationToken: cts.Token);
        Assert.Equal(NodeCapacity, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(Hash(rest), Hash(await job.GetAsync("rest", cancellationToken: cts.Token)));

        // An empty stream needs no space at all, even on a full node.
        await job.PutAsync("empty", new UnknownLengthStream(new MemoryStream()), cancellationToken: cts.Token);
        Assert.Empty(await job.GetAsync("empty", cancellationToken: cts.Token));
        Assert.Equal(NodeCapacity, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task StreamLargerThanTheClusterFailsMidwayAndFreesEverything()
    {
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: NodeCapacity);
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { StreamAllocationBatch = 1 << 20 });
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("overflow", cts.Token);
        await job.PutAsync("keep", RandomBytes(100_000, 1), cancellationToken: cts.Token);
        var used = await UsedAsync(cluster.Admin(client));

        var stream = new PatternStream(NodeCapacity * 2, 9, seekable: false);
        await Assert.ThrowsAsync<CapacityExceededException>(() => job.PutAsync("overflow", stream, cancellationToken: cts.Token));
        Assert.True(stream.Length > 0);
        Assert.Null(await job.LookupAsync("overflow", cts.Token));
        Assert.Equal(1, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(used, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(100_000, (await job.GetUsageAsync(cts.Token)).BlockBytes);
    }

    [Fact]
    public async Task AStreamShorterThanItsLengthStoresWhatItHadAndFreesTheRest()
    {
        // A file truncated while it is uploaded: space was granted for the stated length, only part is used.
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("shrinking", cts.Token);
        var data = RandomBytes((3 << 20) + 4_567, 3);
        await job.PutAsync("short", new ClaimsMoreStream(data, claimed: 9 << 20), cancellationToken: cts.Token);

        Assert.Equal(data.Length, (await job.LookupAsync("short", cts.Token))!.Size);
        Assert.Equal(Hash(data), Hash(await job.GetAsync("short", cancellationToken: cts.Token)));
        Assert.Equal((data.Length + 65_535) / 65_536 * 65_536, await UsedAsync(cluster.Admin(client)));
        await job.DeleteAsync("short", cancellationToken: cts.Token);
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }

    /// <summary>Seekable, says it holds <c>claimed</c> bytes, ends after the real ones.</summary>
    private sealed class ClaimsMoreStream(byte[] data, long claimed) : Stream
    {
        private readonly MemoryStream _inner = new(data);

        public override bool CanRead => true;

        public override bool CanSeek => true;

        public override bool CanWrite => false;

        public override long Length => claimed;

        public override long Position
        {
            get => _inner.Position;
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _inner.ReadAsync(buffer, cancellationToken);

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public async Task DeregisterFreesEveryByte()
    {
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 32 << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("ephemeral", cts.Token);
        var neighbour = await cluster.Admin(client).RegisterJobAsync("neighbour", cts.Token);
        var kept = RandomBytes(3 << 20, 3);
        await neighbour.PutAsync("kept", kept, cancellationToken: cts.Token);
        var neighbourUse = await UsedAsync(cluster.Admin(client));

        long bytes = 0;
        for (var i = 0; i < 20; i++)
        {
            var size = (i * 311_111) % (2 << 20);
            bytes += size;
            await job.PutAsync($"d/{i}", DataFor($"d/{i}", size), cancellationToken: cts.Token);
        }

        // An open write and a half-read delete-after-read object are freed too.
        var open = new GatedStream(new PatternStream(8 << 20, 8), 1 << 20);
        var pending = job.PutAsync("open", open, cancellationToken: cts.Token);
        await open.Reached.WaitAsync(cts.Token);
        Assert.True(await UsedAsync(cluster.Admin(client)) > neighbourUse);

        var (objects, freed) = await cluster.Admin(client).DeregisterJobAsync(job.Id, cts.Token);
        Assert.Equal(20, objects);
        Assert.Equal(bytes, freed);
        Assert.Equal(neighbourUse, await UsedAsync(cluster.Admin(client)));

        open.Release();
        await Assert.ThrowsAnyAsync<PocketException>(() => pending.WaitAsync(cts.Token));
        Assert.Equal(neighbourUse, await UsedAsync(cluster.Admin(client)));

        // The job is gone for good; its neighbour is untouched.
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await job.CountAsync(cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => cluster.Admin(client).DeregisterJobAsync(job.Id, cts.Token));
        Assert.Equal(Hash(kept), Hash(await neighbour.GetAsync("kept", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task DeleteAfterReadGivesTheSpaceBackOnceRead()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("consume", cts.Token);
        var data = RandomBytes(5 << 20, 5);
        await job.PutAsync("once", data, cancellationToken: cts.Token);
        await job.PutAsync("streamed", data, cancellationToken: cts.Token);
        await job.PutAsync("ranged", data, cancellationToken: cts.Token);
        Assert.Equal(3L * (5 << 20), await UsedAsync(cluster.Admin(client)));

        Assert.Equal(Hash(data), Hash(await job.GetAsync("once", GetFlags.DeleteAfterRead, cts.Token)));
        var sink = new HashingStream();
        await job.GetAsync("streamed", sink, flags: GetFlags.DeleteAfterRead, cancellationToken: cts.Token);
        Assert.Equal(Hash(data), sink.Hash);
        var part = new byte[1000];
        await job.GetAsync("ranged", 4000, part, GetFlags.DeleteAfterRead, cts.Token);
        Assert.True(data.AsSpan(4000, 1000).SequenceEqual(part));

        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(0, (await job.GetUsageAsync(cts.Token)).BlockBytes);
    }
}
