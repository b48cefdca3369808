using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Pocket.Networking;

namespace Pocket.LoadGenerator;

/// <summary>
/// One bench client's own RESP connection (`--connections N` against a peer): the timed ops go over
/// <see cref="RespConnection"/> as raw commands (GET, SET, EXISTS, DEL, SCAN, SCARD), untimed setup through the
/// peer's shared multiplexer target. Keys are encoded into a reused buffer, so an op allocates no key string. When
/// some of the N connections could not be opened, the clients share the rest (as Pocket's clients share a
/// multiplexed connection): a RESP connection carries one command at a time, so they take turns.
/// </summary>
internal sealed class RespConnectionTarget : IBenchTarget
{
    private readonly RedisBenchTarget _shared;
    private readonly RespConnection _connection;
    private readonly byte[] _root;
    private byte[] _key = new byte[256];
    // The turn costs what Pocket's client pays for its in-flight bound (an AsyncGate: one interlocked operation in, one
    // out), not a SemaphoreSlim's two monitor locks per op: bench work the peer alone did was charged to the peer.
    private readonly AsyncGate _turn = new(1);
    private int _database;

    public RespConnectionTarget(RedisBenchTarget shared, RespConnection connection)
    {
        _shared = shared;
        _connection = connection;
        _root = Encoding.UTF8.GetBytes(shared.Root);
    }

    public string Name => _shared.Name;

    public string? CpuScope => _shared.CpuScope;

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken)
    {
        CheckWhole(value.Length);
        await _turn.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await UseDatabaseAsync(0).ConfigureAwait(false);
            await _connection.SetAsync(Key(key), value).ConfigureAwait(false);
        }
        finally
        {
            _turn.Exit();
        }
    }

    // Pooled like the Pocket client's methods: a box per get would be the bench's cost, charged to the peer.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken)
    {
        CheckWhole(destination.Length);
        long length;
        await _turn.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await UseDatabaseAsync(0).ConfigureAwait(false);
            length = await _connection.GetAsync(Key(key), destination).ConfigureAwait(false);
        }
        finally
        {
            _turn.Exit();
        }

        return length >= 0 ? (int)length : throw new LoadGeneratorException($"{Name}: key '{key}' is missing");
    }

    public Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken) =>
        _shared.DeleteAsync(prefix, keys, size, cancellationToken);

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) => _shared.CpuSecondsAsync(cancellationToken);

    public async ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken) =>
        await CommandAsync(0, cancellationToken, "EXISTS", _shared.Root + key).ConfigureAwait(false) > 0;

    public async ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken) =>
        await CommandAsync(0, cancellationToken, "DEL", _shared.Root + key).ConfigureAwait(false);

    public Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken) =>
        _shared.CreateListedAsync(prefix, count, cancellationToken);

    public async ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken)
    {
        // The same SCAN walk as the multiplexed target's, one round trip per SCAN.
        var pattern = _shared.Root + prefix + "*";
        var count = limit.ToString(CultureInfo.InvariantCulture);
        await _turn.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await UseDatabaseAsync(RedisBenchTarget.ListDatabase).ConfigureAwait(false);
            long cursor = 0;
            var listed = 0;
            do
            {
                listed += (int)await _connection.CommandAsync("SCAN", cursor.ToString(CultureInfo.InvariantCulture), "MATCH", pattern, "COUNT", count).ConfigureAwait(false);
                cursor = _connection.LastCursor;
            }
            while (cursor != 0 && listed < limit);
            return Math.Min(listed, limit);
        }
        finally
        {
            _turn.Exit();
        }
    }

    public ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken) =>
        CommandAsync(RedisBenchTarget.ListDatabase, cancellationToken, "SCARD", (string)_shared.IndexKey(prefix)!);

    public Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken) =>
        _shared.DropListedAsync(prefix, count, cancellationToken);

    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    /// <summary>One command in <paramref name="database"/>, in this connection's turn.</summary>
    private async ValueTask<long> CommandAsync(int database, CancellationToken cancellationToken, params string[] arguments)
    {
        await _turn.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await UseDatabaseAsync(database).ConfigureAwait(false);
            return await _connection.CommandAsync(arguments).ConfigureAwait(false);
        }
        finally
        {
            _turn.Exit();
        }
    }

    /// <summary>The key under the shared root, as UTF-8 in the reused buffer.</summary>
    private ReadOnlySpan<byte> Key(string key)
    {
        var length = _root.Length + Encoding.UTF8.GetMaxByteCount(key.Length);
        if (_key.Length < length)
        {
            _key = new byte[length];
        }

        _root.CopyTo(_key, 0);
        return _key.AsSpan(0, _root.Length + Encoding.UTF8.GetBytes(key, _key.AsSpan(_root.Length)));
    }

    /// <summary>Switches the connection's database when an op needs another one (only list100 and count use theirs).</summary>
    private async ValueTask UseDatabaseAsync(int database)
    {
        if (_database != database)
        {
            await _connection.CommandAsync("SELECT", database.ToString(CultureInfo.InvariantCulture)).ConfigureAwait(false);
            _database = database;
        }
    }

    private void CheckWhole(long size)
    {
        if (RespChunks.Count(size) > 0)
        {
            throw new LoadGeneratorException($"{Name}: --connections sends each value in one command, at most {RespChunks.ChunkSize >> 20} MiB; use --clients for larger objects");
        }
    }
}
