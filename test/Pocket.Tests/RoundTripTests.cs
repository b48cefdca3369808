using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Objects come back byte for byte: every size class, byte ranges, streams and files.</summary>
public sealed class RoundTripTests : IDisposable
{
    private const int Block = 64 << 10;
    /// <summary>The client's default inline threshold: the protocol's largest inline object, one block.</summary>
    private const int Small = Block;
    private readonly string _directory = Directory.CreateTempSubdirectory("pocket-roundtrip-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    public static TheoryData<int> Sizes =>
    [
        0, 1, 16 << 10, Small - 1, Small, Small + 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (3 << 20) + 12_345,
    ];

    [Theory]
    [MemberData(nameof(Sizes))]
    public async Task MemoryPutAndGetReturnTheSameBytes(int size)
    {
        await using var cluster = await StartClusterAsync();
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("roundtrip", cts.Token);
        var data = RandomBytes(size, size);
        await job.PutAsync("dir/object", data, cancellationToken: cts.Token);

        var back = await job.GetAsync("dir/object", cancellationToken: cts.Token);
        Assert.Equal(size, back.Length);
        Assert.Equal(Hash(data), Hash(back));

        var info = await job.LookupAsync("dir/object", cts.Token);
        Assert.NotNull(info);
        Assert.Equal(size, info.Size);
        Assert.Equal(size <= Small, info.Inline);
        Assert.Equal(size, info.Inline ? size : info.Blocks.Sum(b => (long)b.Length));

        var streamed = new HashingStream();
        await job.GetAsync("dir/object", streamed, cancellationToken: cts.Token);
        Assert.Equal(size, streamed.Length);
        Assert.Equal(Hash(data), streamed.Hash);
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public async Task StreamsOfUnknownLengthRoundTrip(int size)
    {
        await using var cluster = await StartClusterAsync();
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("unknown-length", cts.Token);
        var data = RandomBytes(size, ~size);

        // Short reads make the client gather extents from many stream reads.
        await job.PutAsync("piped", new UnknownLengthStream(new MemoryStream(data), maxRead: 7_919), cancellationToken: cts.Token);

        var back = await job.GetAsync("piped", cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(back));
        Assert.Equal(1, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(size, (await job.LookupAsync("piped", cts.Token))!.Size);
    }

    [Fact]
    public async Task StreamsAtAndAroundTheAllocationBatchRoundTrip()
    {
        // Unknown-length streams are allocated in batches; the object must end exactly where the stream ends.
        const int batch = 2 << 20;
        await using var cluster = await StartClusterAsync();
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { StreamAllocationBatch = batch });
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("batches", cts.Token);
        foreach (var size in new long[] { batch - 1, batch, batch + 1, (3 * batch) + 77 })
        {
            var key = $"s{size}";
            await job.PutAsync(key, new PatternStream(size, seed: (int)size, seekable: false), cancellationToken: cts.Token);
            var sink = new HashingStream();
            await job.GetAsync(key, sink, cancellationToken: cts.Token);
            Assert.Equal(size, sink.Length);
            Assert.Equal(PatternStream.HashOf(size, (int)size), sink.Hash);
        }

        // Nothing beyond the committed bytes stays allocated.
        var usage = await job.GetUsageAsync(cts.Token);
        var stored = new long[] { batch - 1, batch, batch + 1, (3 * batch) + 77 }.Sum();
        Assert.Equal(stored, usage.BlockBytes);
        var blocksUsed = new long[] { batch - 1, batch, batch + 1, (3 * batch) + 77 }.Sum(s => (s + Block - 1) / Block * Block);
        Assert.Equal(blocksUsed, await UsedAsync(cluster.Admin(client)));
    }

    [Fact]
    public async Task HundredMegabyteObjectRoundTripsFromMemory()
    {
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 128L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("hundred", cts.Token);
        var data = RandomBytes(100 << 20, 100);
        await job.PutAsync("big", data, cancellationToken: cts.Token);
        var back = await job.GetAsync("big", cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(back));
    }

    [Fact]
    public async Task OneGigabyteObjectStreamsInAndOut()
    {
        const long size = 1L << 30;
        await using var cluster = await StartClusterAsync(nodes: 3, capacity: 512L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("gigabyte", cts.Token);
        var expected = PatternStream.HashOf(size, 1);

        await job.PutAsync("huge", new PatternStream(size, seed: 1), cancellationToken: cts.Token);
        var info = await job.LookupAsync("huge", cts.Token);
        Assert.Equal(size, info!.Size);
        Assert.Equal(3, info.Blocks.Select(b => b.NodeId).Distinct().Count());

        var sink = new HashingStream();
        await job.GetAsync("huge", sink, cancellationToken: cts.Token);
        Assert.Equal(size, sink.Length);
        Assert.Equal(expected, sink.Hash);

        // A range deep inside, read both ways.
        var offset = (700L << 20) + 4_321;
        var range = new byte[3 << 20];
        Assert.Equal(range.Length, await job.GetAsync("huge", offset, range, cancellationToken: cts.Token));
        Assert.Equal(Hash(PatternStream.Slice(1, offset, range.Length)), Hash(range));
    }

    [Fact]
    public async Task ByteRangesMatchTheObjectAcrossBlockAndExtentBoundaries()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("ranges", cts.Token);
        var data = RandomBytes((5 << 20) + 12_345, 5);
        await job.PutAsync("r", data, cancellationToken: cts.Token);

        // Where one extent ends and the next begins, from the server's own placement.
        var info = await job.LookupAsync("r", cts.Token);
        var boundaries = new List<long>();
        long at = 0;
        foreach (var block in info!.Blocks)
        {
            at += block.Length;
            boundaries.Add(at);
        }

        Assert.Equal(data.Length, at);
        Assert.True(info.Blocks.Count >= 5, "a 5 MiB object is cut into stripe units");

        var ranges = new List<(long Offset, int Length)>
        {
            (0, 0), (0, 1), (0, data.Length), (1, data.Length - 1), (data.Length - 1, 1), (data.Length, 0),
            (Block - 1, 2), (Block, Block), (Block - 100, (3 * Block) + 200), ((1 << 20) - 100, 3 << 20),
        };
        foreach (var boundary in boundaries.Where(b => b < data.Length))
        {
            ranges.Add((boundary - 1, 2));
            ranges.Add((boundary - 1, 1));
            ranges.Add((boundary, 1));
            ranges.Add((boundary - 5_000, 10_000));
        }

        foreach (var (offset, length) in ranges)
        {
            var expected = data.AsSpan((int)offset, length).ToArray();

            var into = new byte[length];
            var read = await job.GetAsync("r", offset, into, cancellationToken: cts.Token);
            Assert.Equal(length, read);
            Assert.True(expected.AsSpan().SequenceEqual(into), $"memory range {offset}+{length}");

            var sink = new MemoryStream();
            await job.GetAsync("r", sink, offset, length, cancellationToken: cts.Token);
            Assert.True(expected.AsSpan().SequenceEqual(sink.ToArray()), $"stream range {offset}+{length}");
        }

        // A destination longer than the rest of the object gets only the rest.
        var tail = new byte[100_000];
        Assert.Equal(1_000, await job.GetAsync("r", data.Length - 1_000, tail, cancellationToken: cts.Token));
        Assert.True(data.AsSpan(data.Length - 1_000).SequenceEqual(tail.AsSpan(0, 1_000)));
        Assert.True(tail.AsSpan(1_000).IndexOfAnyExcept((byte)0) < 0, "nothing is written past the object's end");

        // Ranges outside the object are refused, not clamped silently.
        var beyond = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync("r", data.Length + 1, new byte[1], cancellationToken: cts.Token));
        Assert.Equal(Status.BadRequest, beyond.Status);
        foreach (var (offset, length) in new (long, long)[] { (data.Length - 10, 11), (10, long.MaxValue), (long.MaxValue, 1), (-1, 1), (0, -2) })
        {
            var refused = await Assert.ThrowsAnyAsync<PocketException>(() => job.GetAsync("r", new MemoryStream(), offset, length, cancellationToken: cts.Token));
            Assert.Equal(Status.BadRequest, refused.Status);
        }

        var negative = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync("r", -1, new byte[1], cancellationToken: cts.Token));
        Assert.Equal(Status.BadRequest, negative.Status);
    }

    [Fact]
    public async Task ByteRangesOfInlineObjects()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("inline-ranges", cts.Token);
        var data = RandomBytes(10_000, 10);
        await job.PutAsync("small", data, cancellationToken: cts.Token);
        Assert.True((await job.LookupAsync("small", cts.Token))!.Inline);

        foreach (var (offset, length) in new (int, int)[] { (0, 0), (0, 1), (0, 10_000), (9_999, 1), (10_000, 0), (1_234, 5_678) })
        {
            var into = new byte[length];
            Assert.Equal(length, await job.GetAsync("small", offset, into, cancellationToken: cts.Token));
            Assert.True(data.AsSpan(offset, length).SequenceEqual(into), $"memory range {offset}+{length}");

            var sink = new MemoryStream();
            await job.GetAsync("small", sink, offset, length, cancellationToken: cts.Token);
            Assert.True(data.AsSpan(offset, length).SequenceEqual(sink.ToArray()), $"stream range {offset}+{length}");
        }

        var longer = new byte[500];
        Assert.Equal(100, await job.GetAsync("small", 9_900, longer, cancellationToken: cts.Token));
        Assert.True(data.AsSpan(9_900).SequenceEqual(longer.AsSpan(0, 100)));

        var beyond = await Assert.ThrowsAnyAsync<PocketException>(async () => await job.GetAsync("small", 10_001, new byte[1], cancellationToken: cts.Token));
        Assert.Equal(Status.BadRequest, beyond.Status);
        foreach (var (offset, length) in new (long, long)[] { (9_990, 11), (1, long.MaxValue), (long.MaxValue, 1), (-1, 1), (0, -2) })
        {
            var refused = await Assert.ThrowsAnyAsync<PocketException>(() => job.GetAsync("small", new MemoryStream(), offset, length, cancellationToken: cts.Token));
            Assert.Equal(Status.BadRequest, refused.Status);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5_000)]
    [InlineData((7 << 20) + 3)]
    public async Task FilesRoundTrip(int size)
    {
        await using var cluster = await StartClusterAsync();
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("files", cts.Token);
        var source = Path.Combine(_directory, $"in-{size}");
        var target = Path.Combine(_directory, $"out-{size}");
        var data = RandomBytes(size, size + 1);
        await File.WriteAllBytesAsync(source, data, cts.Token);
        await File.WriteAllBytesAsync(target, RandomBytes(size + 100, 3), cts.Token);

        long reported = -1;
        await job.PutFileAsync("f", source, progress: new SyncProgress(n => reported = n), cancellationToken: cts.Token);
        if (size > 0)
        {
            Assert.Equal(size, reported);
        }

        await job.GetFileAsync("f", target, cancellationToken: cts.Token);

        // The target is replaced, not overwritten in place.
        Assert.Equal(Hash(data), Hash(await File.ReadAllBytesAsync(target, cts.Token)));
        Assert.Equal(Hash(data), Hash(await ReadAllAsync(job, "f")));
    }

    [Fact]
    public async Task AFailedGetIntoAFileLeavesTheFileAlone()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("keep-file", cts.Token);
        var precious = Path.Combine(_directory, "precious");
        var original = RandomBytes(50_000, 50);
        await File.WriteAllBytesAsync(precious, original, cts.Token);

        // No such key.
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => job.GetFileAsync("missing", precious, cancellationToken: cts.Token));
        Assert.Equal(Hash(original), Hash(await File.ReadAllBytesAsync(precious, cts.Token)));
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => job.GetFileAsync("missing", Path.Combine(_directory, "absent"), cancellationToken: cts.Token));
        Assert.False(File.Exists(Path.Combine(_directory, "absent")));

        // An object known to be lost.
        var victim = cluster.Nodes[1]!.NodeId;
        await job.PutAsync("striped", RandomBytes(8 << 20, 8), cancellationToken: cts.Token);
        Assert.Contains((await job.LookupAsync("striped", cts.Token))!.Blocks, b => b.NodeId == victim);
        await cluster.StopNodeAsync(1);
        await WaitUntilAsync(async () => (await cluster.Admin(client).GetNodesAsync()).Single(n => n.Id == victim).State == NodeState.Dead, "the node is dead");
        await Assert.ThrowsAsync<NodeLostException>(() => job.GetFileAsync("striped", precious, cancellationToken: cts.Token));
        Assert.Equal(Hash(original), Hash(await File.ReadAllBytesAsync(precious, cts.Token)));

        // Delete-after-read into a file that cannot be created: the grant is released, no space leaks.
        var used = await UsedAsync(cluster.Admin(client));
        await job.PutAsync("consumable", RandomBytes(100_000, 1), cancellationToken: cts.Token);
        await Assert.ThrowsAnyAsync<IOException>(() => job.GetFileAsync("consumable", Path.Combine(_directory, "no-such-dir", "f"), GetFlags.DeleteAfterRead, cancellationToken: cts.Token));
        Assert.Equal(used, await UsedAsync(cluster.Admin(client)));

        // Nothing is left behind in the directory.
        Assert.Equal(new[] { "precious" }, Directory.GetFiles(_directory).Select(f => Path.GetFileName(f)).ToArray());
    }

    [Fact]
    public async Task SeekableStreamIsReadFromItsCurrentPosition()
    {
        await using var cluster = await StartClusterAsync();
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("position", cts.Token);
        var data = RandomBytes((2 << 20) + 99, 77);
        foreach (var skip in new[] { 10, (2 << 20) + 99 - 100 })
        {
            var stream = new MemoryStream(data) { Position = skip };
            await job.PutAsync($"from{skip}", stream, cancellationToken: cts.Token);
            Assert.Equal(Hash(data.AsSpan(skip)), Hash(await job.GetAsync($"from{skip}", cancellationToken: cts.Token)));
        }
    }

    [Fact]
    public async Task ManyObjectsOfMixedSizesKeepTheirOwnBytes()
    {
        // Objects written back to back share nodes and neighbouring blocks; none may bleed into another.
        await using var cluster = await StartClusterAsync(nodes: 3);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("mixed", cts.Token);
        var sizes = Enumerable.Range(0, 60).Select(i => (i * 37_501) % ((1 << 20) + 3)).ToArray();
        await Parallel.ForEachAsync(Enumerable.Range(0, sizes.Length), cts.Token, async (i, ct) =>
            await job.PutAsync($"m/{i}", DataFor($"m/{i}", sizes[i]), cancellationToken: ct));
        await Parallel.ForEachAsync(Enumerable.Range(0, sizes.Length), cts.Token, async (i, ct) =>
            Assert.Equal(Hash(DataFor($"m/{i}", sizes[i])), Hash(await job.GetAsync($"m/{i}", cancellationToken: ct))));
    }

    /// <summary>Progress that reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
