using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using Pocket.Client;
using StackExchange.Redis;

namespace Pocket.LoadGenerator;

/// <summary>A system the bench drives. Every method is called from many clients at once.</summary>
internal interface IBenchTarget : IAsyncDisposable
{
    string Name { get; }

    /// <summary>What <see cref="CpuSecondsAsync"/> measures, for the report; null when nothing is measured.</summary>
    string? CpuScope { get; }

    ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken);

    /// <summary>
    /// Reads the whole object into <paramref name="destination"/> (sized for it) and returns its length. An int, as the
    /// destination's length and Pocket's own get: a target can then hand back the client's task with no async level of
    /// its own (each level is a pooled box and a continuation per get, which the bench charged to the system).
    /// </summary>
    ValueTask<int> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken);

    /// <summary>Deletes the given keys (objects of <paramref name="size"/> bytes), all under <paramref name="prefix"/>; not timed.</summary>
    Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken);

    /// <summary>Cumulative CPU seconds of the server (see <see cref="CpuScope"/>), or null.</summary>
    Task<double?> CpuSecondsAsync(CancellationToken cancellationToken);

    /// <summary>Metadata only: whether the object exists (the lookup op).</summary>
    ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken);

    /// <summary>Deletes one object; timed (the delete half of create_delete).</summary>
    ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken);

    /// <summary>Creates <paramref name="count"/> empty objects under <paramref name="prefix"/> for <see cref="ListAsync"/> and <see cref="CountAsync"/>; not timed.</summary>
    Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken);

    /// <summary>Lists up to <paramref name="limit"/> keys under the prefix and returns how many came back (the list100 op).</summary>
    ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken);

    /// <summary>Counts the objects under a prefix made by <see cref="CreateListedAsync"/> (the count op).</summary>
    ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken);

    /// <summary>Removes what <see cref="CreateListedAsync"/> made; not timed.</summary>
    Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken);

    /// <summary>The target bench client <paramref name="client"/> times its ops through: itself, unless each client has its own connection (--connections).</summary>
    IBenchTarget ForClient(int client) => this;
}

/// <summary>How each system does the metadata-only ops, for the report (the JSON config and below the table).</summary>
internal static class BenchMetaMapping
{
    public static readonly IReadOnlyList<(BenchOp Op, string Pocket, string Resp)> Ops =
    [
        (BenchOp.Lookup,
            $"LookupAsync(key) of one of {BenchRunner.LookupKeys} existing 0-byte objects",
            "EXISTS key"),
        (BenchOp.CreateDelete,
            "PutAsync(key, 0 bytes) then DeleteAsync(key); each request is one op",
            "SET key \"\" then DEL key; each command is one op"),
        (BenchOp.List100,
            $"ListPageAsync(prefix, limit {BenchRunner.ListedKeys}): one page holding the {BenchRunner.ListedKeys} objects under the prefix, each entry read from the reply (key as UTF-8 bytes, checked against the prefix)",
            $"SCAN cursor MATCH prefix* COUNT {BenchRunner.ListedKeys} in database {RedisBenchTarget.ListDatabase}, which holds only those {BenchRunner.ListedKeys} keys, repeated until {BenchRunner.ListedKeys} keys or cursor 0 (one op)"),
        (BenchOp.Count,
            $"CountAsync(prefix) over the {BenchRunner.ListedKeys} objects",
            $"SCARD of a set holding the {BenchRunner.ListedKeys} key names (the bench adds each name as it creates the key)"),
    ];
}

/// <summary>
/// Pocket through <see cref="PocketClient"/>: one shared client (one connection per server), one job. Every key is
/// under <paramref name="root"/>, so that a run in a job the user gave (--job) never touches the job's own objects.
/// Disposing it disposes <paramref name="owner"/> (the client a worker process opened for it), if any.
/// </summary>
internal sealed class PocketBenchTarget(PocketJob job, string root, string? cpuScope, Func<double?> cpuSeconds, IAsyncDisposable? owner = null) : IBenchTarget
{
    public string Name => "pocket";

    public string? CpuScope => cpuScope;

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken) =>
        job.PutAsync(root + key, value, PutFlags.None, cancellationToken);

    private RootedKeys? _keys;

    // The client's own task, with no async level of the bench's between: a user awaiting GetAsync pays one level (the
    // client's), as the RESP target's caller does (its target's). The key under the root is made once per pool key, as
    // the RESP target encodes its keys into a reused buffer: a string per get was the bench's allocation, charged to Pocket.
    public ValueTask<int> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken) =>
        job.GetAsync((_keys ??= RootedKeys.For(root)).Of(key), 0, destination, GetFlags.None, cancellationToken);

    public async Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken) =>
        await job.DeleteAsync(root + prefix, recursive: true, cancellationToken).ConfigureAwait(false);

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) => Task.FromResult(cpuSeconds());

    public async ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken) =>
        await job.LookupAsync(root + key, cancellationToken).ConfigureAwait(false) is not null;

    public async ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken) =>
        await job.DeleteAsync(root + key, recursive: false, cancellationToken).ConfigureAwait(false);

    public async Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken)
    {
        for (var i = 0; i < count; i++)
        {
            await job.PutAsync(root + ListedKey(prefix, i), ReadOnlyMemory<byte>.Empty, PutFlags.None, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken)
    {
        // One page of `limit` entries, walked entry by entry; a key counts when it lies under the prefix.
        var listed = _listed is { } cached && cached.Prefix == prefix ? cached : _listed = new ListedPrefix(prefix, Encoding.UTF8.GetBytes(root + prefix));
        using var page = await job.ListPageAsync(root + prefix, startAfter: null, limit, delimited: false, cancellationToken).ConfigureAwait(false);
        var count = 0;
        foreach (var entry in page)
        {
            if (entry.KeyUtf8.StartsWith(listed.Utf8))
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>The list100 prefix in UTF-8, kept so a list op makes no arrays.</summary>
    private ListedPrefix? _listed;

    private sealed record ListedPrefix(string Prefix, byte[] Utf8);

    public ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken) => job.CountAsync(root + prefix, cancellationToken);

    public async Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken) =>
        await job.DeleteAsync(root + prefix, recursive: true, cancellationToken).ConfigureAwait(false);

    public ValueTask DisposeAsync() => owner?.DisposeAsync() ?? ValueTask.CompletedTask;

    internal static string ListedKey(string prefix, int i) => string.Create(CultureInfo.InvariantCulture, $"{prefix}{i:D3}");
}

/// <summary>
/// Keys under one root (root + key), each made once and shared by every target of the process with that root: the
/// gets of a run read a fixed pool of keys. Bounded, so unique keys (puts) cannot grow it without end.
/// </summary>
internal sealed class RootedKeys
{
    private const int MaxKeys = 1 << 16;
    private static readonly ConcurrentDictionary<string, RootedKeys> Roots = new();
    private readonly ConcurrentDictionary<string, string> _keys = new();
    private readonly string _root;
    private int _count;

    private RootedKeys(string root) => _root = root;

    public static RootedKeys For(string root) => Roots.GetOrAdd(root, static r => new RootedKeys(r));

    public string Of(string key)
    {
        if (_keys.TryGetValue(key, out var rooted))
        {
            return rooted;
        }

        rooted = _root + key;
        if (Volatile.Read(ref _count) < MaxKeys && _keys.TryAdd(key, rooted))
        {
            Interlocked.Increment(ref _count);
        }

        return rooted;
    }
}

/// <summary>
/// A RESP server (Redis, Garnet, ...) through StackExchange.Redis: one multiplexer, SET/GET. Values over
/// 256 MiB are split into chunks (<see cref="RespChunks"/>), timed end to end.
/// </summary>
internal sealed class RedisBenchTarget : IBenchTarget
{
    /// <summary>
    /// list100 runs in its own database: SCAN walks the whole keyspace, so keys of other runs in the same
    /// database would make it slower for reasons that have nothing to do with listing 100 keys.
    /// </summary>
    internal const int ListDatabase = 15;

    private readonly ConnectionMultiplexer _multiplexer;
    private readonly IDatabase _database;
    private readonly IDatabase _listDatabase;
    private readonly IServer _server;
    private readonly string _root;
    private readonly ServerCpu _cpu;
    private readonly Action<string> _warn;

    private RedisBenchTarget(string name, ConnectionMultiplexer multiplexer, string root, ServerCpu cpu, Action<string> warn)
    {
        Name = name;
        _multiplexer = multiplexer;
        _database = multiplexer.GetDatabase();
        _listDatabase = multiplexer.GetDatabase(ListDatabase);
        _server = multiplexer.GetServers()[0];
        _root = root;
        _cpu = cpu;
        _warn = warn;
    }

    public string Name { get; }

    public string? CpuScope => _cpu.Scope;

    /// <summary>The prefix of every key this target writes.</summary>
    public string Root => _root;

    /// <summary>How the bench connects to a RESP peer (the same for `bench` and `bench sort`).</summary>
    public static ConfigurationOptions Options(BenchPeer peer, string clientName) => new()
    {
        EndPoints = { { peer.Host, peer.Port } },
        AbortOnConnectFail = true,
        ConnectTimeout = 5000,
        // A 1 GiB value crosses loopback at ~0.2 GB/s into Redis: the default 5 s would time out.
        AsyncTimeout = 600_000,
        SyncTimeout = 600_000,
        AllowAdmin = true,
        ClientName = clientName,
        SocketManager = SocketManager.ThreadPool,
    };

    /// <summary>
    /// One more connection to the same server under the same key root (--connections): a raw RESP connection of its
    /// own (<see cref="RespConnection"/>), read by the same client loops as Pocket's connections, so that each bench
    /// client is one TCP connection driven the way Pocket's are. Untimed setup stays on this target's multiplexer.
    /// </summary>
    public async Task<(IBenchTarget Target, IAsyncDisposable Owner)> ConnectAnotherAsync(BenchPeer peer, CancellationToken cancellationToken)
    {
        var connection = await RespConnection.ConnectAsync(peer.Host, peer.Port, cancellationToken).ConfigureAwait(false);
        var target = new RespConnectionTarget(this, connection);
        return (target, target);
    }

    /// <summary>
    /// Connects to <paramref name="peer"/>; <paramref name="warn"/> hears what may skew its numbers. Keys go under
    /// <paramref name="root"/>, a fresh one when null (a worker process of `--processes` is given its parent's).
    /// </summary>
    public static async Task<RedisBenchTarget> ConnectAsync(BenchPeer peer, Action<string> warn, CancellationToken cancellationToken, string? root = null)
    {
        var options = Options(peer, "pocket-bench");
        try
        {
            var multiplexer = await ConnectionMultiplexer.ConnectAsync(options).WaitAsync(cancellationToken).ConfigureAwait(false);
            var cpu = await ServerCpu.FindAsync(multiplexer.GetServers()[0], peer).ConfigureAwait(false);
            return new RedisBenchTarget(peer.Name, multiplexer, root ?? $"pocket-bench:{Guid.NewGuid():N}:", cpu, warn);
        }
        catch (RedisConnectionException ex)
        {
            throw new LoadGeneratorException($"cannot connect to {peer.Name} at {peer.Host}:{peer.Port}: {ex.Message}", ex);
        }
    }

    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken)
    {
        if (RespChunks.Count(value.Length) == 0)
        {
            await _database.StringSetAsync(_root + key, value).ConfigureAwait(false);
            return;
        }

        await Task.WhenAll(RespChunks.Set(_database, _root, key, value)).ConfigureAwait(false);
    }

    public async ValueTask<int> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken)
    {
        // Leases come from a pool, as Pocket reads into a reused buffer: neither side pays for fresh memory.
        var chunks = RespChunks.Count(destination.Length);
        if (chunks == 0)
        {
            using var lease = await _database.StringGetLeaseAsync(_root + key).ConfigureAwait(false);
            return lease?.Length ?? throw new LoadGeneratorException($"{Name}: key '{key}' is missing");
        }

        var gets = new List<Task<Lease<byte>?>>(chunks);
        for (var n = 0; n < chunks; n++)
        {
            gets.Add(_database.StringGetLeaseAsync(RespChunks.Key(_root, key, n)));
        }

        var total = 0;
        foreach (var get in gets)
        {
            using var lease = await get.ConfigureAwait(false);
            total += lease?.Length ?? throw new LoadGeneratorException($"{Name}: a chunk of key '{key}' is missing");
        }

        return total;
    }

    public async Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken)
    {
        var chunks = RespChunks.Count(size);
        var all = new List<RedisKey>(keys.Count * Math.Max(1, chunks));
        foreach (var key in keys)
        {
            if (chunks == 0)
            {
                all.Add(_root + key);
            }

            for (var n = 0; n < chunks; n++)
            {
                all.Add(RespChunks.Key(_root, key, n));
            }
        }

        foreach (var batch in all.Chunk(512))
        {
            await _database.KeyDeleteAsync(batch).ConfigureAwait(false);
        }
    }

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) => _cpu.SecondsAsync(_server);

    public async ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken) =>
        await _database.KeyExistsAsync(_root + key).ConfigureAwait(false);

    public async ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken) =>
        await _database.KeyDeleteAsync(_root + key).ConfigureAwait(false);

    public async Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken)
    {
        var size = await _server.DatabaseSizeAsync(ListDatabase).ConfigureAwait(false);
        if (size > 0)
        {
            _warn($"{Name} database {ListDatabase} already holds {size} keys: SCAN walks them too, so list100 is slower than on an empty database");
        }

        var names = new RedisValue[count];
        for (var i = 0; i < count; i++)
        {
            var key = _root + PocketBenchTarget.ListedKey(prefix, i);
            await _listDatabase.StringSetAsync(key, ReadOnlyMemory<byte>.Empty).ConfigureAwait(false);
            names[i] = key;
        }

        await _listDatabase.SetAddAsync(IndexKey(prefix), names).ConfigureAwait(false);
    }

    public async ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken)
    {
        // Raw SCAN rather than IServer.KeysAsync, so that each round trip is one SCAN exactly as written here.
        var pattern = _root + prefix + "*";
        long cursor = 0;
        var listed = 0;
        do
        {
            var reply = await _listDatabase.ExecuteAsync("SCAN", cursor, "MATCH", pattern, "COUNT", limit).ConfigureAwait(false);
            var parts = (RedisResult[])reply!;
            cursor = long.Parse((string)parts[0]!, CultureInfo.InvariantCulture);
            listed += ((RedisResult[])parts[1]!).Length;
        }
        while (cursor != 0 && listed < limit);
        return Math.Min(listed, limit);
    }

    public async ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken) =>
        await _listDatabase.SetLengthAsync(IndexKey(prefix)).ConfigureAwait(false);

    public async Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken)
    {
        var keys = Enumerable.Range(0, count).Select(i => (RedisKey)(_root + PocketBenchTarget.ListedKey(prefix, i))).Append(IndexKey(prefix)).ToArray();
        await _listDatabase.KeyDeleteAsync(keys).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync() => await _multiplexer.DisposeAsync().ConfigureAwait(false);

    /// <summary>Outside the listed keys' pattern (root + prefix + *), so SCAN never returns it.</summary>
    internal RedisKey IndexKey(string prefix) => $"{_root}index:{prefix}";
}

/// <summary>A --vs peer: NAME=resp://HOST:PORT.</summary>
internal sealed record BenchPeer(string Name, string Host, int Port, string Url)
{
    public static bool TryParse(string text, out BenchPeer? peer, out string error)
    {
        peer = null;
        var equals = text.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0)
        {
            error = $"'{text}' is not NAME=resp://HOST:PORT";
            return false;
        }

        var name = text[..equals].Trim();
        var url = text[(equals + 1)..].Trim();
        if (!name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') || name == "pocket")
        {
            error = $"peer name '{name}' must be letters, digits, '-', '_' or '.', and not 'pocket'";
            return false;
        }

        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("resp" or "redis") || uri.Host.Length == 0)
        {
            error = $"'{url}' is not resp://HOST:PORT (the only protocol peers speak so far is RESP)";
            return false;
        }

        peer = new BenchPeer(name, uri.Host.Trim('[', ']'), uri.Port > 0 ? uri.Port : 6379, url);
        error = string.Empty;
        return true;
    }
}

/// <summary>
/// Where a RESP peer's CPU time comes from: `INFO cpu` when the server answers it (Redis), else, for a server
/// on this machine, the /proc entry of the process listening on its port (Garnet has no `INFO cpu`).
/// </summary>
internal sealed class ServerCpu
{
    private readonly int? _pid;

    private ServerCpu(string? scope, int? pid)
    {
        Scope = scope;
        _pid = pid;
    }

    public string? Scope { get; }

    public static async Task<ServerCpu> FindAsync(IServer server, BenchPeer peer)
    {
        if (await FromInfoAsync(server).ConfigureAwait(false) is not null)
        {
            return new ServerCpu("server (INFO cpu)", null);
        }

        if (ProcStat.ListenerPid(peer.Host, peer.Port) is { } pid)
        {
            return new ServerCpu($"server process {pid} (/proc, 10 ms ticks)", pid);
        }

        return new ServerCpu(null, null);
    }

    public async Task<double?> SecondsAsync(IServer server)
    {
        if (_pid is not { } pid)
        {
            return Scope is null ? null : await FromInfoAsync(server).ConfigureAwait(false);
        }

        return ProcStat.CpuSeconds(pid);
    }

    private static async Task<double?> FromInfoAsync(IServer server)
    {
        IGrouping<string, KeyValuePair<string, string>>[] info;
        try
        {
            info = await server.InfoAsync("cpu").ConfigureAwait(false);
        }
        catch (RedisServerException)
        {
            return null;
        }

        double total = 0;
        var found = 0;
        foreach (var pair in info.SelectMany(group => group))
        {
            if (pair.Key is "used_cpu_sys" or "used_cpu_user" && double.TryParse(pair.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds))
            {
                total += seconds;
                found++;
            }
        }

        return found == 2 ? total : null;
    }
}
