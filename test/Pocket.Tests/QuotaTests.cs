using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Job quotas and the metadata server's object-memory bound over real sockets: each kind of quota is hit and named,
/// nothing is half-done, other jobs are unaffected, and the reproduced exhaustion failures stay fixed.
/// </summary>
public sealed class QuotaTests
{
    private static async Task AssertUnchangedAsync(PocketJob job, JobUsage before, string refusedKey, CancellationToken cancellationToken)
    {
        Assert.Null(await job.LookupAsync(refusedKey, cancellationToken));
        var after = await job.GetUsageAsync(cancellationToken);
        Assert.Equal((before.Objects, before.BlockBytes, before.InlineBytes, before.KeyBytes), (after.Objects, after.BlockBytes, after.InlineBytes, after.KeyBytes));
    }

    [Fact]
    public async Task EachQuotaKindIsRefusedWithItsNameLimitAndUse()
    {
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 16L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var admin = cluster.Admin(client);

        // Bytes: blocks and inline bytes together, whichever way the data arrives.
        var bytes = await admin.RegisterJobAsync("bytes", NodeTier.Dram, null, new JobQuota(MaxBytes: 3 << 20, 0, 0), cts.Token);
        var first = RandomBytes(2 << 20, 1);
        await bytes.PutAsync("first", first, cancellationToken: cts.Token);
        await bytes.PutAsync("inline", new byte[1000], cancellationToken: cts.Token);
        var before = await bytes.GetUsageAsync(cts.Token);
        Assert.Equal(new JobQuota(3 << 20, 0, 0), before.Quota);
        var big = RandomBytes((1 << 20) + 1, 2);
        var refused = await Assert.ThrowsAsync<QuotaExceededException>(async () => await bytes.PutAsync("second", big, cancellationToken: cts.Token));
        Assert.Equal(Status.QuotaExceeded, refused.Status);
        Assert.Contains($"job '{bytes.Id}' may hold {3 << 20} bytes and holds {(2 << 20) + 1000}", refused.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<QuotaExceededException>(() => bytes.PutAsync("second", new MemoryStream(big), cancellationToken: cts.Token));
        await Assert.ThrowsAsync<QuotaExceededException>(() => bytes.PutAsync("second", new UnknownLengthStream(new MemoryStream(big)), cancellationToken: cts.Token));
        await AssertUnchangedAsync(bytes, before, "second", cts.Token);
        Assert.Equal(Hash(first), Hash(await bytes.GetAsync("first", cancellationToken: cts.Token)));

        // A stream of unknown length that fits under the quota is stored, although its first batch asks for more.
        var fits = RandomBytes((1 << 20) - 1000 - (64 << 10), 3);
        await bytes.PutAsync("fits", new UnknownLengthStream(new MemoryStream(fits)), cancellationToken: cts.Token);
        Assert.Equal(Hash(fits), Hash(await bytes.GetAsync("fits", cancellationToken: cts.Token)));

        // Objects.
        var objects = await admin.RegisterJobAsync("objects", NodeTier.Dram, null, new JobQuota(0, MaxObjects: 3, 0), cts.Token);
        for (var i = 0; i < 3; i++)
        {
            await objects.PutAsync($"o{i}", new byte[i * 100_000], cancellationToken: cts.Token);
        }

        before = await objects.GetUsageAsync(cts.Token);
        var tooMany = await Assert.ThrowsAsync<QuotaExceededException>(async () => await objects.PutAsync("o3", new byte[10], cancellationToken: cts.Token));
        Assert.Contains("may hold 3 objects and holds 3", tooMany.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<QuotaExceededException>(async () => await objects.PutAsync("o3", new byte[200_000], cancellationToken: cts.Token));
        await AssertUnchangedAsync(objects, before, "o3", cts.Token);
        Assert.Equal(1, await objects.DeleteAsync("o0", cancellationToken: cts.Token));
        await objects.PutAsync("o3", new byte[10], cancellationToken: cts.Token);

        // Key bytes.
        var keys = await admin.RegisterJobAsync("keys", NodeTier.Dram, null, new JobQuota(0, 0, MaxKeyBytes: 20), cts.Token);
        await keys.PutAsync(new string('a', 15), new byte[1], cancellationToken: cts.Token);
        before = await keys.GetUsageAsync(cts.Token);
        Assert.Equal(15, before.KeyBytes);
        var longKey = await Assert.ThrowsAsync<QuotaExceededException>(async () => await keys.PutAsync("bbbbbb", new byte[1], cancellationToken: cts.Token));
        Assert.Contains("may hold 20 key bytes and holds 15; this request needs 6 more", longKey.Message, StringComparison.Ordinal);
        await AssertUnchangedAsync(keys, before, "bbbbbb", cts.Token);
        await keys.PutAsync("bbbbb", new byte[1], cancellationToken: cts.Token);
    }

    [Fact]
    public async Task AJobAtItsQuotaLeavesTheClusterToOtherJobs()
    {
        // Regression: a job sized small filled the whole cluster and another job's 1 MiB put then failed. Bounded: a
        // 2 MiB quota on 8 MiB of nodes.
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 4L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var admin = cluster.Admin(client);
        var greedy = await admin.RegisterJobAsync("greedy", NodeTier.Dram, null, new JobQuota(MaxBytes: 2 << 20, 0, 0), cts.Token);
        var other = await admin.RegisterJobAsync("other", cts.Token);

        var stored = 0;
        var chunk = new byte[256 << 10];
        while (stored < 100)
        {
            try
            {
                await greedy.PutAsync($"part-{stored}", chunk, cancellationToken: cts.Token);
                stored++;
            }
            catch (QuotaExceededException)
            {
                break;
            }
        }

        Assert.Equal(8, stored);
        Assert.Equal(2 << 20, await UsedAsync(cluster.Admin(client)));
        var data = RandomBytes(1 << 20, 5);
        await other.PutAsync("one-mib", data, cancellationToken: cts.Token);
        Assert.Equal(Hash(data), Hash(await other.GetAsync("one-mib", cancellationToken: cts.Token)));
    }

    [Fact]
    public async Task ZeroByteObjectsWithLongKeysStopAtTheServersBoundAndTheirMemoryIsReturned()
    {
        // Regression: 0-byte objects with 1,000-byte keys took the metadata server to 2 GiB (the inline cap counted data
        // bytes only). Bounded: a 2 MiB bound stops the fill after about 900 objects.
        const long bound = 2 << 20;
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: 4L << 20, configure: o => o with { MaxObjectMemory = bound });
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var admin = cluster.Admin(client);
        var filler = await admin.RegisterJobAsync("filler", cts.Token);
        var prefix = new string('k', 990);
        var stored = 0;
        QuotaExceededException? refused = null;
        while (refused is null && stored < 10_000)
        {
            try
            {
                await filler.PutAsync($"{prefix}-{stored:D6}", ReadOnlyMemory<byte>.Empty, cancellationToken: cts.Token);
                stored++;
            }
            catch (QuotaExceededException ex)
            {
                refused = ex;
            }
        }

        Assert.NotNull(refused);
        Assert.Contains("metadata server's object memory bound", refused.Message, StringComparison.Ordinal);
        var each = 200 + (2 * 997);
        Assert.Equal(bound / each, stored);
        Assert.InRange(cluster.Metadata.Snapshot().ObjectMemory, bound - each, bound);

        // Every job is refused an object of that size now, with the same error; the server keeps serving reads.
        var other = await admin.RegisterJobAsync("other", cts.Token);
        var otherKey = $"{prefix}-other!";
        var otherRefused = await Assert.ThrowsAsync<QuotaExceededException>(async () => await other.PutAsync(otherKey, new byte[10], cancellationToken: cts.Token));
        Assert.Contains("object memory bound", otherRefused.Message, StringComparison.Ordinal);
        Assert.Equal(stored, await filler.CountAsync(cancellationToken: cts.Token));

        // Deregistering the filler returns every counted byte, and writes work again.
        Assert.Equal(((long)stored, 0L), await admin.DeregisterJobAsync(filler.Id, cts.Token));
        Assert.Equal(0, cluster.Metadata.Snapshot().ObjectMemory);
        await other.PutAsync(otherKey, new byte[10], cancellationToken: cts.Token);
    }

    [Fact]
    public async Task AClusterWithNoInlineCapacityWritesSmallObjectsThroughTheNodes()
    {
        // PocketClusterOptions.InlineCapacity reaches the metadata server (as `pocket up --inline-capacity` does).
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: 4L << 20, configure: o => o with { InlineCapacity = 0 });
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(60);
        var job = await cluster.Admin(client).RegisterJobAsync("no-inline", cts.Token);
        var data = RandomNumberGenerator.GetBytes(1024);
        await job.PutAsync("small", data, cancellationToken: cts.Token);
        var info = await job.LookupAsync("small", cts.Token);
        Assert.False(info!.Inline);
        Assert.NotEmpty(info.Blocks);
        Assert.Equal(data, await job.GetAsync("small", cancellationToken: cts.Token));
        Assert.Equal(0, cluster.Metadata.Snapshot().InlineBytes);
    }

    [Fact]
    public async Task SmallPutsPastTheServersMemoryGoThroughTheNodesAndReadBackIntact()
    {
        // A 2 MiB bound (its inline store: a quarter, 512 KiB) and 64 KiB objects sent inline: 4 MiB of puts pass both,
        // and every one is stored, through a node once the server has no room for its bytes.
        const long bound = 2 << 20;
        await using var cluster = await StartClusterAsync(nodes: 2, capacity: 16L << 20, configure: o => o with { MaxObjectMemory = bound });
        await using var client = await cluster.ConnectAsync(new PocketClientOptions { SmallObjectThreshold = 64 << 10 });
        using var cts = Timeout(120);
        var admin = cluster.Admin(client);
        Assert.Equal(bound / 4, cluster.Metadata.Snapshot().InlineCapacity);
        var job = await admin.RegisterJobAsync("inline", cts.Token);
        var objects = Enumerable.Range(0, 64).Select(i => RandomBytes(64 << 10, 100 + i)).ToList();
        for (var i = 0; i < objects.Count; i++)
        {
            await job.PutAsync($"o{i:D2}", objects[i], cancellationToken: cts.Token);
        }

        var usage = await job.GetUsageAsync(cts.Token);
        Assert.Equal(64, usage.Objects);
        Assert.Equal(8L << 16, usage.InlineBytes);
        Assert.Equal(56L << 16, usage.BlockBytes);

        // Records fill the rest of the bound (0-byte objects with long keys) until less than one object's inline bytes
        // is left: the inline store has room, the bound has not, and a 64 KiB put still goes through a node.
        Assert.Equal(1, await job.DeleteAsync("o00", cancellationToken: cts.Token));
        var prefix = new string('k', 990);
        var filled = 0;
        while (bound - cluster.Metadata.Snapshot().ObjectMemory > 32 << 10)
        {
            await job.PutAsync($"{prefix}-{filled++:D6}", ReadOnlyMemory<byte>.Empty, cancellationToken: cts.Token);
        }

        Assert.True(cluster.Metadata.Snapshot().InlineBytes < bound / 4);
        await job.PutAsync("o00", objects[0], cancellationToken: cts.Token);
        Assert.Equal((7L << 16, 57L << 16), ((await job.GetUsageAsync(cts.Token)).InlineBytes, (await job.GetUsageAsync(cts.Token)).BlockBytes));
        for (var i = 0; i < objects.Count; i++)
        {
            Assert.Equal(Hash(objects[i]), Hash(await job.GetAsync($"o{i:D2}", cancellationToken: cts.Token)));
        }

        // A job's own quota is not the server's memory: it still refuses, with QuotaExceeded, on either path.
        var capped = await admin.RegisterJobAsync("capped", NodeTier.Dram, null, new JobQuota(MaxBytes: 100 << 10, 0, 0), cts.Token);
        await capped.PutAsync("first", objects[1], cancellationToken: cts.Token);
        var refused = await Assert.ThrowsAsync<QuotaExceededException>(async () => await capped.PutAsync("second", objects[2], cancellationToken: cts.Token));
        Assert.Contains($"job '{capped.Id}' may hold {100 << 10} bytes", refused.Message, StringComparison.Ordinal);
        Assert.Null(await capped.LookupAsync("second", cts.Token));
    }

    [Fact]
    public async Task RegistrationsWithoutAQuotaStillWorkAndANegativeLimitIsRefused()
    {
        await using var cluster = await StartClusterAsync(nodes: 1, capacity: 4L << 20);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var admin = cluster.Admin(client);

        // The older forms (name only; name, token and tier; with weights) get the server's default: no limits.
        var old = await admin.RegisterJobAsync("old", cts.Token);
        var usage = await old.GetUsageAsync(cts.Token);
        Assert.Equal(JobQuota.Unlimited, usage.Quota);
        var weighted = await admin.RegisterJobAsync("weighted", NodeTier.Dram, new Dictionary<uint, double> { [1] = 1 }, cts.Token);
        Assert.Equal(JobQuota.Unlimited, (await weighted.GetUsageAsync(cts.Token)).Quota);
        await old.PutAsync("a", new byte[100], cancellationToken: cts.Token);

        var bad = await Assert.ThrowsAsync<PocketException>(() => admin.RegisterJobAsync("bad", NodeTier.Dram, null, new JobQuota(0, -1, 0), cts.Token));
        Assert.Equal(Status.BadRequest, bad.Status);
        Assert.Contains("max objects must be >= 0", bad.Message, StringComparison.Ordinal);

        // The server still serves, and the refused registration made no job.
        Assert.Equal(100, (await old.GetAsync("a", cancellationToken: cts.Token)).Length);
        Assert.Equal(2, cluster.Metadata.Snapshot().Jobs);
    }
}
