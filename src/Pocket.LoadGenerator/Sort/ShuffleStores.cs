using System.Globalization;
using StackExchange.Redis;

namespace Pocket.LoadGenerator.Sort;

/// <summary>
/// A RESP server (Redis, Garnet) as a shuffle store, through one StackExchange.Redis multiplexer: SET and GET of
/// whole values. A value over <see cref="RespChunks.ChunkSize"/> is stored as chunks (<see cref="RespChunks"/>)
/// plus key:chunks holding the count, and `key` itself is never set; a GET that finds no `key` reads the
/// count. Every key is under a prefix of this run, and <see cref="ClearAsync"/> deletes what was written.
/// </summary>
internal sealed class RespShuffleStore(string name, IDatabase database, string root) : IShuffleStore
{
    private readonly List<RedisKey> _written = [];
    private readonly Lock _lock = new();

    public string Description => name;

    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var chunks = RespChunks.Count(data.Length);
        if (chunks == 0)
        {
            Remember(root + key);
            await database.StringSetAsync(root + key, data).ConfigureAwait(false);
            return;
        }

        var sets = RespChunks.Set(database, root, key, data, Remember);

        // The count goes last, on the same connection: whoever sees it sees every chunk.
        Remember(CountKey(key));
        sets.Add(database.StringSetAsync(CountKey(key), chunks));
        await Task.WhenAll(sets).ConfigureAwait(false);
    }

    public async ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken)
    {
        var whole = await database.StringGetAsync(root + key).ConfigureAwait(false);
        if (!whole.IsNull)
        {
            return (byte[])whole!;
        }

        var count = await database.StringGetAsync(CountKey(key)).ConfigureAwait(false);
        if (count.IsNull || !int.TryParse((string?)count, NumberStyles.None, CultureInfo.InvariantCulture, out var chunks))
        {
            throw new LoadGeneratorException($"{name}: key '{key}' is missing");
        }

        var parts = await Task.WhenAll(Enumerable.Range(0, chunks).Select(n => database.StringGetAsync(RespChunks.Key(root, key, n)))).ConfigureAwait(false);
        var result = new byte[parts.Sum(p => p.IsNull ? throw new LoadGeneratorException($"{name}: a chunk of key '{key}' is missing") : (long)p.Length())];
        var at = 0;
        foreach (var part in parts)
        {
            var bytes = (byte[])part!;
            bytes.CopyTo(result, at);
            at += bytes.Length;
        }

        return result;
    }

    /// <summary>Deletes every key this store wrote.</summary>
    public async Task ClearAsync()
    {
        RedisKey[] keys;
        lock (_lock)
        {
            keys = [.. _written];
            _written.Clear();
        }

        foreach (var batch in keys.Chunk(512))
        {
            await database.KeyDeleteAsync(batch).ConfigureAwait(false);
        }
    }

    private void Remember(RedisKey key)
    {
        lock (_lock)
        {
            _written.Add(key);
        }
    }

    private string CountKey(string key) => $"{root}{key}:chunks";
}

/// <summary>
/// A local directory as a shuffle store: one file per key (a key's '/' become subdirectories), written and read
/// whole through the page cache, never synced, as ephemeral data would be. <see cref="ClearAsync"/> removes the directory.
/// </summary>
internal sealed class DirectoryShuffleStore : IShuffleStore
{
    private readonly string _root;

    public DirectoryShuffleStore(string parent)
    {
        _root = Path.Combine(Path.GetFullPath(parent), "pocket-sort-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_root);
    }

    public string Description => $"directory {_root}";

    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var path = PathOf(key);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.Asynchronous);
        await using (stream.ConfigureAwait(false))
        {
            await stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken)
    {
        try
        {
            return await File.ReadAllBytesAsync(PathOf(key), cancellationToken).ConfigureAwait(false);
        }
        catch (FileNotFoundException ex)
        {
            throw new LoadGeneratorException($"directory store: key '{key}' is missing", ex);
        }
    }

    public Task ClearAsync()
    {
        Directory.Delete(_root, recursive: true);
        return Task.CompletedTask;
    }

    private string PathOf(string key) => Path.Combine(_root, key.Replace('/', Path.DirectorySeparatorChar));
}

/// <summary>Counts what goes through a store: bytes and objects written and read.</summary>
internal sealed class CountingShuffleStore(IShuffleStore inner) : IShuffleStore
{
    private long _bytesWritten;
    private long _bytesRead;
    private long _puts;
    private long _gets;

    public string Description => inner.Description;

    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    public long BytesRead => Interlocked.Read(ref _bytesRead);

    public long Puts => Interlocked.Read(ref _puts);

    public long Gets => Interlocked.Read(ref _gets);

    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await inner.PutAsync(key, data, cancellationToken).ConfigureAwait(false);
        Interlocked.Add(ref _bytesWritten, data.Length);
        Interlocked.Increment(ref _puts);
    }

    public async ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken)
    {
        var data = await inner.GetAsync(key, cancellationToken).ConfigureAwait(false);
        Interlocked.Add(ref _bytesRead, data.Length);
        Interlocked.Increment(ref _gets);
        return data;
    }
}

/// <summary>Another store's keys under a prefix: a warm-up sort beside the measured one, in the same store.</summary>
internal sealed class PrefixedShuffleStore(IShuffleStore inner, string prefix) : IShuffleStore
{
    public string Description => $"{inner.Description} under {prefix}";

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        inner.PutAsync(prefix + key, data, cancellationToken);

    public ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken) =>
        inner.GetAsync(prefix + key, cancellationToken);
}

/// <summary>
/// A RESP server connected as a shuffle store for one sort run (`pocket bench sort --vs redis`): the multiplexer,
/// the store under a prefix of its own, and the server's CPU time where it can be read. Disposing deletes what the
/// run wrote and closes the connection.
/// </summary>
internal sealed class RespShuffleConnection : IAsyncDisposable
{
    private readonly ConnectionMultiplexer _multiplexer;
    private readonly IServer _server;
    private readonly ServerCpu _cpu;

    private RespShuffleConnection(BenchPeer peer, ConnectionMultiplexer multiplexer, ServerCpu cpu)
    {
        _multiplexer = multiplexer;
        _server = multiplexer.GetServers()[0];
        _cpu = cpu;
        Store = new RespShuffleStore(peer.Name, multiplexer.GetDatabase(), $"pocket-sort:{Guid.NewGuid():N}:");
    }

    public RespShuffleStore Store { get; }

    /// <summary>How the server's CPU time is read, or null when it cannot be (not on this machine, no INFO cpu).</summary>
    public string? CpuScope => _cpu.Scope;

    public static async Task<RespShuffleConnection> ConnectAsync(BenchPeer peer, CancellationToken cancellationToken)
    {
        var options = RedisBenchTarget.Options(peer, "pocket-bench-sort");
        ConnectionMultiplexer multiplexer;
        try
        {
            multiplexer = await ConnectionMultiplexer.ConnectAsync(options).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (RedisConnectionException ex)
        {
            throw new LoadGeneratorException($"cannot connect to {peer.Name} at {peer.Host}:{peer.Port} (give its address with --resp {peer.Name}=resp://HOST:PORT): {ex.Message}", ex);
        }

        try
        {
            var cpu = await ServerCpu.FindAsync(multiplexer.GetServers()[0], peer).ConfigureAwait(false);
            return new RespShuffleConnection(peer, multiplexer, cpu);
        }
        catch
        {
            await multiplexer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public Task<double?> CpuSecondsAsync() => _cpu.SecondsAsync(_server);

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Store.ClearAsync().ConfigureAwait(false);
        }
        finally
        {
            await _multiplexer.DisposeAsync().ConfigureAwait(false);
        }
    }
}
