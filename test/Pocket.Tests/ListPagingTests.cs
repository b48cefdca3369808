using Pocket.Admin;
using Pocket.Client;
using Pocket.Metadata;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>
/// Listing against a plain model of its rules: every prefix, start-after (at a key, between keys, at a directory,
/// inside one, before and after everything) and page size gives exactly the entries the model gives, and a listing
/// cut anywhere resumes with start-after where it stopped.
/// </summary>
public sealed class ListPagingTests
{
    [Fact]
    public void SortedKeyIndexMatchesASortedSetThroughSplitsAndRemovals()
    {
        var random = new Random(5);
        var index = new SortedKeyIndex();
        var model = new SortedSet<string>(StringComparer.Ordinal);
        for (var round = 0; round < 20_000; round++)
        {
            // A small key space, so adds hit existing keys and removes empty whole chunks.
            var key = $"k{random.Next(3000):D4}";
            if (random.Next(3) == 0)
            {
                Assert.Equal(model.Remove(key), index.Remove(key));
            }
            else
            {
                Assert.Equal(model.Add(key), index.Set(Entry(key)));
            }

            Assert.Equal(model.Count, index.Count);

            // Merges keep deletes from leaving a trail of nearly empty chunks: on average over an eighth full.
            Assert.True(index.ChunkCount <= (index.Count / (SortedKeyIndex.ChunkCapacity / 8)) + 2, $"{index.ChunkCount} chunks for {index.Count} keys");
            if (round % 997 == 0)
            {
                var from = $"k{random.Next(3100):D4}";
                Assert.Equal(model.Where(k => string.CompareOrdinal(k, from) >= 0), Walk(index.From(from, exclusive: false)));
                Assert.Equal(model.Where(k => string.CompareOrdinal(k, from) > 0), Walk(index.From(from, exclusive: true)));
                Assert.Equal(model, Walk(index.From(string.Empty, exclusive: false)));
            }
        }

        foreach (var key in model.ToList())
        {
            Assert.True(index.Remove(key));
        }

        Assert.Equal(0, index.Count);
        Assert.Empty(Walk(index.From("k", exclusive: false)));
        Assert.False(index.Remove("k0001"));
        Assert.True(index.Set(Entry("k0001")));
        Assert.Equal(["k0001"], Walk(index.From(string.Empty, exclusive: false)));
    }

    [Fact]
    public void SortedKeyIndexFillsChunksWithKeysAddedInOrderAndReplacesEntries()
    {
        var index = new SortedKeyIndex();
        var count = (SortedKeyIndex.ChunkCapacity * 10) + 1;
        for (var i = 0; i < count; i++)
        {
            Assert.True(index.Set(Entry($"k{i:D6}")));
        }

        Assert.Equal(11, index.ChunkCount);

        // Setting an existing key replaces its entry in place: the index hands out the new one.
        var replacement = new ObjectEntry { Key = "k000300", Size = 42 };
        Assert.False(index.Set(replacement));
        Assert.Equal(count, index.Count);
        var walk = index.From("k000300", exclusive: false);
        Assert.True(walk.MoveNext());
        Assert.Same(replacement, walk.Current);
    }

    [Fact]
    public async Task ListingWithStartAfterMatchesTheModelOnEveryPageSize()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("paging", cts.Token);

        // 20 directories of 30 keys (d1 also prefixes d10..d19), one deeper level, loose keys between and around.
        var keys = new List<string> { "a", "d", "d-x", "d0", "e", "z", "d5/" + "\uffff" };
        for (var d = 0; d < 20; d++)
        {
            for (var k = 0; k < 30; k++)
            {
                keys.Add($"d{d}/k{k:D2}");
            }

            keys.Add($"d{d}/sub/x");
        }

        await Task.WhenAll(keys.Select(key => job.PutAsync(key, DataFor(key, key.Length % 7), cancellationToken: cts.Token).AsTask()));
        var sorted = keys.Order(StringComparer.Ordinal).ToArray();

        string[] prefixes = ["", "d1", "d1/", "d10/", "d5/", "d19/sub/", "nothing/"];
        string?[] starts = [null, "", "a", "b", "d1", "d1/", "d1/k15", "d1/k155", "d1/sub/", "d10/", "d12/k29", "d19/sub/x", "d5/\uffff", "zz", "\uffff"];
        foreach (var prefix in prefixes)
        {
            foreach (var startAfter in starts)
            {
                foreach (var delimited in new[] { false, true })
                {
                    var expected = Model(sorted, prefix, startAfter, delimited);
                    foreach (var pageSize in new[] { 1, 7, 30, 1000 })
                    {
                        var listed = await ListAsync(job, prefix, startAfter, delimited, pageSize, int.MaxValue, cts.Token);
                        Assert.True(expected.SequenceEqual(listed), $"prefix '{prefix}', start-after '{startAfter}', delimited {delimited}, page {pageSize}: [{string.Join(", ", listed)}] instead of [{string.Join(", ", expected)}]");
                    }
                }
            }
        }

        // Sizes come back with the keys; directories have none.
        await foreach (var entry in job.ListAsync("d3/", startAfter: "d3/k10", delimited: true, pageSize: 4, cancellationToken: cts.Token))
        {
            Assert.Equal(entry.IsPrefix ? 0 : entry.Key.Length % 7, entry.Size);
            Assert.Equal(entry.Key.EndsWith('/'), entry.IsPrefix);
        }
    }

    [Fact]
    public async Task PagesHoldTheListingsEntriesAndSizesOfReplacedObjects()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("pages", cts.Token);
        var keys = Enumerable.Range(0, 250).Select(i => $"p/{i:D3}").ToList();
        await Task.WhenAll(keys.Select(key => job.PutAsync(key, DataFor(key, 3), cancellationToken: cts.Token).AsTask()));

        // A deleted and re-written object lists with its new size (the index holds the new entry).
        await job.DeleteAsync("p/007", cancellationToken: cts.Token);
        await job.PutAsync("p/007", DataFor("p/007", 11), cancellationToken: cts.Token);

        var listed = new List<(string Key, long Size)>();
        string? next = null;
        var pages = 0;
        while (true)
        {
            using var page = await job.ListPageAsync("p/", next, limit: 100, cancellationToken: cts.Token);
            pages++;
            var before = listed.Count;
            foreach (var entry in page)
            {
                Assert.False(entry.IsPrefix);
                Assert.Equal(entry.Key, System.Text.Encoding.UTF8.GetString(entry.KeyUtf8));
                listed.Add((entry.Key, entry.Size));
            }

            Assert.Equal(page.Count, listed.Count - before);
            if (!page.HasMore)
            {
                Assert.Equal(string.Empty, page.NextStartAfter);
                break;
            }

            next = page.NextStartAfter;
            Assert.Equal(listed[^1].Key, next);
        }

        Assert.Equal(3, pages);
        Assert.Equal(keys, listed.Select(entry => entry.Key));
        Assert.All(listed, entry => Assert.Equal(entry.Key == "p/007" ? 11 : 3, entry.Size));

        var disposed = await job.ListPageAsync("p/", null, limit: 5, cancellationToken: cts.Token);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => disposed.GetEnumerator());
    }

    [Fact]
    public async Task AListingCutAnywhereResumesAfterItsLastEntry()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("resume", cts.Token);
        var keys = new List<string>();
        for (var i = 0; i < 700; i++)
        {
            // Every fifth key is in a directory of its own with three keys, so cuts also fall on directories.
            keys.Add(i % 5 == 0 ? $"r/{i:D4}/x" : $"r/{i:D4}");
            if (i % 5 == 0)
            {
                keys.Add($"r/{i:D4}/y");
                keys.Add($"r/{i:D4}/z/deep");
            }
        }

        await Task.WhenAll(keys.Select(key => job.PutAsync(key, ReadOnlyMemory<byte>.Empty, cancellationToken: cts.Token).AsTask()));
        foreach (var delimited in new[] { false, true })
        {
            var whole = await ListAsync(job, "r/", null, delimited, 1000, int.MaxValue, cts.Token);
            Assert.Equal(Model(keys.Order(StringComparer.Ordinal).ToArray(), "r/", null, delimited), whole);
            foreach (var cut in new[] { 1, 2, 99, 100, 101, 333, whole.Count - 1 })
            {
                var first = await ListAsync(job, "r/", null, delimited, 100, cut, cts.Token);
                var rest = await ListAsync(job, "r/", first[^1], delimited, 100, int.MaxValue, cts.Token);
                Assert.Equal(whole, first.Concat(rest).ToList());
            }
        }
    }

    /// <summary>The listing rules, written plainly: keys under the prefix after start-after, folded at the next '/'.</summary>
    private static List<string> Model(string[] sorted, string prefix, string? startAfter, bool delimited)
    {
        var entries = new List<string>();
        foreach (var key in sorted)
        {
            if (!key.StartsWith(prefix, StringComparison.Ordinal) || (!string.IsNullOrEmpty(startAfter) && string.CompareOrdinal(key, startAfter) <= 0))
            {
                continue;
            }

            var slash = delimited ? key.IndexOf('/', prefix.Length) : -1;
            var entry = slash < 0 ? key : key[..(slash + 1)];
            if (slash >= 0 && ((!string.IsNullOrEmpty(startAfter) && string.CompareOrdinal(entry, startAfter) <= 0) || entries.Contains(entry)))
            {
                continue;
            }

            entries.Add(entry);
        }

        return entries;
    }

    private static async Task<List<string>> ListAsync(PocketJob job, string prefix, string? startAfter, bool delimited, int pageSize, int take, CancellationToken cancellationToken)
    {
        var keys = new List<string>();
        await foreach (var entry in job.ListAsync(prefix, startAfter, delimited, pageSize, cancellationToken))
        {
            keys.Add(entry.Key);
            if (keys.Count == take)
            {
                break;
            }
        }

        return keys;
    }

    private static ObjectEntry Entry(string key) => new() { Key = key, Size = key.Length };

    private static List<string> Walk(SortedKeyIndex.Enumerator keys)
    {
        var list = new List<string>();
        foreach (var entry in keys)
        {
            list.Add(entry.Key);
        }

        return list;
    }
}
