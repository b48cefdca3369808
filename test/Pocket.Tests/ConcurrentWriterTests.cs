using Pocket.Admin;
using Pocket.Client;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Many writers at once; then count and list must agree exactly with what was written.</summary>
public sealed class ConcurrentWriterTests
{
    private const int Writers = 64;
    private const int PerWriter = 1000;

    [Fact]
    public async Task CountAndListAgreeWithSixtyFourConcurrentWriters()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("writers", cts.Token);

        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            for (var k = 0; k < PerWriter; k++)
            {
                var key = $"w{w}/k{k}";
                await job.PutAsync(key, DataFor(key, (k % 5) * 7), cancellationToken: cts.Token);
            }
        }));
        await Task.WhenAll(writers).WaitAsync(cts.Token);

        var expected = new SortedSet<string>(StringComparer.Ordinal);
        for (var w = 0; w < Writers; w++)
        {
            for (var k = 0; k < PerWriter; k++)
            {
                expected.Add($"w{w}/k{k}");
            }
        }

        Assert.Equal(Writers * PerWriter, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(PerWriter, await job.CountAsync("w7/", cts.Token));
        Assert.Equal(PerWriter, await job.CountAsync("w63", cts.Token));

        // "w1" as a plain prefix also covers w10..w19.
        Assert.Equal(11 * PerWriter, await job.CountAsync("w1", cts.Token));
        Assert.Equal(111, await job.CountAsync("w3/k1", cts.Token));
        Assert.Equal(0, await job.CountAsync("w64/", cts.Token));

        // The full listing, in key order, with no key missing, doubled or invented.
        var listed = new List<ListEntry>();
        await foreach (var entry in job.ListAsync(cancellationToken: cts.Token))
        {
            listed.Add(entry);
        }

        Assert.Equal(expected.ToList(), listed.Select(e => e.Key).ToList());
        Assert.All(listed, e => Assert.False(e.IsPrefix));
        Assert.All(listed, e => Assert.Equal(int.Parse(e.Key[(e.Key.IndexOf('k') + 1)..]) % 5 * 7, e.Size));

        // Small pages under one writer's prefix.
        var page = new List<string>();
        await foreach (var entry in job.ListAsync("w42/", pageSize: 7, cancellationToken: cts.Token))
        {
            page.Add(entry.Key);
        }

        Assert.Equal(expected.Where(k => k.StartsWith("w42/", StringComparison.Ordinal)).ToList(), page);

        // Delimited at the root: one directory per writer, also when pages end on a directory.
        foreach (var size in new[] { 1, 5, 64, 1000 })
        {
            var directories = new List<ListEntry>();
            await foreach (var entry in job.ListAsync(delimited: true, pageSize: size, cancellationToken: cts.Token))
            {
                directories.Add(entry);
            }

            Assert.Equal(Enumerable.Range(0, Writers).Select(w => $"w{w}/").Order(StringComparer.Ordinal).ToList(), directories.Select(d => d.Key).ToList());
            Assert.All(directories, d => Assert.True(d.IsPrefix));
        }

        // A sample of values reads back as written.
        foreach (var key in new[] { "w0/k0", "w13/k999", "w63/k4", "w31/k500" })
        {
            Assert.Equal(DataFor(key, int.Parse(key[(key.IndexOf('k') + 1)..]) % 5 * 7), await job.GetAsync(key, cancellationToken: cts.Token));
        }
    }

    [Fact]
    public async Task DelimitedListingMixesObjectsAndDirectoriesInKeyOrder()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("tree", cts.Token);
        string[] keys = ["a", "a-b", "a/1", "a/2", "a/sub/3", "a0", "b/1", "b/2/3", "c", "ä/x"];
        foreach (var key in keys)
        {
            await job.PutAsync(key, DataFor(key, key.Length), cancellationToken: cts.Token);
        }

        foreach (var size in new[] { 1, 2, 3, 100 })
        {
            Assert.Equal(
                new[] { "a", "a-b", "a/", "a0", "b/", "c", "ä/" },
                await ListKeysAsync(job, "", delimited: true, size, cts.Token));
            Assert.Equal(new[] { "a/1", "a/2", "a/sub/" }, await ListKeysAsync(job, "a/", delimited: true, size, cts.Token));
            Assert.Equal(new[] { "a/1", "a/2", "a/sub/3" }, await ListKeysAsync(job, "a/", delimited: false, size, cts.Token));
            Assert.Equal(keys.Order(StringComparer.Ordinal).ToArray(), await ListKeysAsync(job, "", delimited: false, size, cts.Token));
        }

        Assert.Empty(await ListKeysAsync(job, "zzz/", delimited: true, 10, cts.Token));
        Assert.Equal(keys.Length, await job.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(3, await job.CountAsync("a/", cts.Token));
    }

    [Fact]
    public async Task KeysWithTheHighestCharacterAreNotMissedUnderAPrefix()
    {
        // U+FFFF is a valid key character; keys continuing after one must still count as under the prefix.
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("edge", cts.Token);
        string[] keys = ["p/a", "p/\uffff", "p/\uffffz", "p/\uffff\uffff/deep", "p\uffff/q", "q"];
        foreach (var key in keys)
        {
            await job.PutAsync(key, DataFor(key, 10), cancellationToken: cts.Token);
        }

        Assert.Equal(4, await job.CountAsync("p/", cts.Token));
        Assert.Equal(5, await job.CountAsync("p", cts.Token));
        Assert.Equal(2, await job.CountAsync("p/\uffff\uffff", cts.Token) + await job.CountAsync("p\uffff/", cts.Token));
        foreach (var size in new[] { 1, 2, 100 })
        {
            Assert.Equal(new[] { "p/a", "p/\uffff", "p/\uffffz", "p/\uffff\uffff/deep" }, await ListKeysAsync(job, "p/", delimited: false, size, cts.Token));
            Assert.Equal(new[] { "p/a", "p/\uffff", "p/\uffffz", "p/\uffff\uffff/" }, await ListKeysAsync(job, "p/", delimited: true, size, cts.Token));
            Assert.Equal(new[] { "p/", "p\uffff/", "q" }, await ListKeysAsync(job, "", delimited: true, size, cts.Token));
        }

        Assert.Equal(4, await job.DeleteAsync("p/", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(new[] { "p\uffff/q", "q" }, await ListKeysAsync(job, "", delimited: false, 10, cts.Token));
    }

    [Fact]
    public async Task BadPrefixesAndPageSizesAreRefused()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(client).RegisterJobAsync("bad-list", cts.Token);
        await Assert.ThrowsAnyAsync<PocketException>(async () => await job.CountAsync("/", cts.Token));
        await Assert.ThrowsAnyAsync<PocketException>(async () => await job.CountAsync("a//", cts.Token));
        await Assert.ThrowsAnyAsync<PocketException>(() => ListKeysAsync(job, "../", delimited: false, 10, cts.Token));
        await Assert.ThrowsAnyAsync<PocketException>(() => ListKeysAsync(job, "", delimited: false, 0, cts.Token));
        await Assert.ThrowsAnyAsync<PocketException>(() => ListKeysAsync(job, "", delimited: false, 10_001, cts.Token));
        Assert.Equal(0, await job.CountAsync(cancellationToken: cts.Token));
    }

    private static async Task<string[]> ListKeysAsync(PocketJob job, string prefix, bool delimited, int pageSize, CancellationToken cancellationToken)
    {
        var keys = new List<string>();
        await foreach (var entry in job.ListAsync(prefix, delimited, pageSize, cancellationToken))
        {
            keys.Add(entry.Key);
        }

        return [.. keys];
    }
}
