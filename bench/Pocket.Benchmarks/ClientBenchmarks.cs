using System.Globalization;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;

namespace Pocket.Benchmarks;

/// <summary>
/// The client request path end to end: PocketJob.PutAsync/GetAsync of 1 KiB (inline in the metadata server,
/// one round trip) and LookupAsync, and 64 KiB gets and puts that go through a storage node, against an
/// in-process cluster over loopback. Allocated bytes are the whole process's, so they include what the
/// metadata server and the storage node allocate to answer.
/// </summary>
[MemoryDiagnoser]
public class ClientBenchmarks
{
    /// <summary>Objects are write-once, so puts cycle through this many keys and drop them all on wrap-around.</summary>
    private const int PutKeys = 1 << 15;

    /// <summary>Objects under <see cref="ListPrefix"/>, listed in one page by <see cref="List100"/>.</summary>
    private const int ListedKeys = 100;

    /// <summary>Shaped like `pocket bench`'s list prefix (root, run name, "listed/").</summary>
    private const string ListPrefix = "pocket-bench/meta-list100/listed/";

    private readonly byte[] _value = new byte[1 << 10];
    private readonly byte[] _buffer = new byte[1 << 10];
    private readonly byte[] _large = new byte[64 << 10];
    private readonly byte[] _largeBuffer = new byte[64 << 10];
    private readonly string[] _putKeys = new string[PutKeys];
    private PocketCluster _cluster = null!;
    private PocketClient _client = null!;
    private PocketJob _job = null!;
    private int _next;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        Random.Shared.NextBytes(_value);
        for (var i = 0; i < _putKeys.Length; i++)
        {
            _putKeys[i] = $"put/{i}";
        }

        _cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 64L << 20, PreTouchMemory = false });
        _client = await _cluster.ConnectAsync();
        _job = await _cluster.Admin(_client).RegisterJobAsync("microbench");
        await _job.PutAsync("get/1k", _value);
        await _job.PutAsync("get/64k", _large);
        for (var i = 0; i < ListedKeys; i++)
        {
            await _job.PutAsync(string.Create(CultureInfo.InvariantCulture, $"{ListPrefix}{i:D3}"), ReadOnlyMemory<byte>.Empty);
        }
    }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _client.DisposeAsync();
        await _cluster.DisposeAsync();
    }

    [Benchmark]
    public ValueTask Put1KiB()
    {
        var key = _putKeys[_next++];
        if (_next == _putKeys.Length)
        {
            _next = 0;
            return PutAndDropAllAsync(key);
        }

        return _job.PutAsync(key, _value);
    }

    [Benchmark]
    public ValueTask<int> Get1KiB() => _job.GetAsync("get/1k", 0, _buffer);

    [Benchmark]
    public ValueTask<ObjectInfo?> Lookup() => _job.LookupAsync("get/1k");

    /// <summary>Above the inline threshold: a Get to the metadata server for the grant, then a ReadExtent to the node.</summary>
    [Benchmark]
    public ValueTask<int> Get64KiB() => _job.GetAsync("get/64k", 0, _largeBuffer);

    /// <summary>
    /// One page of the 100 empty objects under a prefix through <c>ListAsync</c> (a <c>ListEntry</c> and key string
    /// per entry): the page size is the number of keys, and the loop stops at the limit so the enumerator never
    /// asks for a second page.
    /// </summary>
    [Benchmark]
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> List100()
    {
        var listed = 0;
        await foreach (var _ in _job.ListAsync(ListPrefix, delimited: false, pageSize: ListedKeys))
        {
            if (++listed == ListedKeys)
            {
                break;
            }
        }

        return listed;
    }

    /// <summary>The same page as `pocket bench`'s list100 reads it: <c>ListPageAsync</c>, each entry from the reply buffer.</summary>
    [Benchmark]
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> ListPage100()
    {
        using var page = await _job.ListPageAsync(ListPrefix, startAfter: null, ListedKeys);
        var listed = 0;
        foreach (var entry in page)
        {
            listed += entry.KeyUtf8.IsEmpty ? 0 : 1;
        }

        return listed;
    }

    /// <summary>Create, WriteExtent, Commit, then Delete (objects are write-once): four requests.</summary>
    [Benchmark]
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask Put64KiBThenDelete()
    {
        await _job.PutAsync("put/64k", _large);
        await _job.DeleteAsync("put/64k");
    }

    private async ValueTask PutAndDropAllAsync(string key)
    {
        await _job.PutAsync(key, _value);
        await _job.DeleteAsync("put/", recursive: true);
    }
}
