using System.Globalization;
using Pocket.Client;
using StackExchange.Redis;

namespace Pocket.Cli.Commands;

/// <summary>A system the bench drives. Every method is called from many clients at once.</summary>
internal interface IBenchTarget : IAsyncDisposable
{
    string Name { get; }

    /// <summary>What <see cref="CpuSecondsAsync"/> measures, for the report; null when nothing is measured.</summary>
    string? CpuScope { get; }

    ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken);

    /// <summary>Reads the whole object into <paramref name="destination"/> (sized for it) and returns its length.</summary>
    ValueTask<long> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken);

    /// <summary>Deletes the given keys (objects of <paramref name="size"/> bytes), all under <paramref name="prefix"/>; not timed.</summary>
    Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken);

    /// <summary>Cumulative CPU seconds of the server (see <see cref="CpuScope"/>), or null.</summary>
    Task<double?> CpuSecondsAsync(CancellationToken cancellationToken);
}

/// <summary>Pocket through <see cref="PocketClient"/>: one shared client (one connection per server), one job.</summary>
internal sealed class PocketBenchTarget(PocketJob job, bool embedded) : IBenchTarget
{
    public string Name => "pocket";

    // The embedded cluster shares this process with the load generator: its CPU cannot be told apart.
    public string? CpuScope => embedded ? "process CPU incl. client" : null;

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken) =>
        job.PutAsync(key, value, PutFlags.None, cancellationToken);

    public async ValueTask<long> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken) =>
        await job.GetAsync(key, 0, destination, GetFlags.None, cancellationToken).ConfigureAwait(false);

    public async Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken) =>
        await job.DeleteAsync(prefix, recursive: true, cancellationToken).ConfigureAwait(false);

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) =>
        Task.FromResult<double?>(embedded ? Environment.CpuUsage.TotalTime.TotalSeconds : null);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// A RESP server (Redis, Garnet, ...) through StackExchange.Redis: one multiplexer, SET/GET. Values over
/// 256 MiB (half of Redis' default proto-max-bulk-len) are split into key:chunkN, timed end to end.
/// </summary>
internal sealed class RedisBenchTarget : IBenchTarget
{
    internal const int ChunkSize = 256 << 20;

    private readonly ConnectionMultiplexer _multiplexer;
    private readonly IDatabase _database;
    private readonly IServer _server;
    private readonly string _root;

    private RedisBenchTarget(string name, ConnectionMultiplexer multiplexer, string root)
    {
        Name = name;
        _multiplexer = multiplexer;
        _database = multiplexer.GetDatabase();
        _server = multiplexer.GetServers()[0];
        _root = root;
    }

    public string Name { get; }

    public string? CpuScope => "server";

    public static async Task<RedisBenchTarget> ConnectAsync(BenchPeer peer, CancellationToken cancellationToken)
    {
        var options = new ConfigurationOptions
        {
            EndPoints = { { peer.Host, peer.Port } },
            AbortOnConnectFail = true,
            ConnectTimeout = 5000,
            // A 1 GiB value crosses loopback at ~0.2 GB/s into Redis: the default 5 s would time out.
            AsyncTimeout = 600_000,
            SyncTimeout = 600_000,
            AllowAdmin = true,
            ClientName = "pocket-bench",
            SocketManager = SocketManager.ThreadPool,
        };
        try
        {
            var multiplexer = await ConnectionMultiplexer.ConnectAsync(options).WaitAsync(cancellationToken).ConfigureAwait(false);
            return new RedisBenchTarget(peer.Name, multiplexer, $"pocket-bench:{Guid.NewGuid():N}:");
        }
        catch (RedisConnectionException ex)
        {
            throw new CliException($"cannot connect to {peer.Name} at {peer.Host}:{peer.Port}: {ex.Message}", ex);
        }
    }

    public async ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken)
    {
        if (value.Length <= ChunkSize)
        {
            await _database.StringSetAsync(_root + key, value).ConfigureAwait(false);
            return;
        }

        // Chunks are sent together: the multiplexer pipelines them on its one connection.
        var sets = new List<Task>();
        for (var (offset, n) = (0, 0); offset < value.Length; offset += ChunkSize, n++)
        {
            var chunk = value.Slice(offset, Math.Min(ChunkSize, value.Length - offset));
            sets.Add(_database.StringSetAsync(ChunkKey(key, n), chunk));
        }

        await Task.WhenAll(sets).ConfigureAwait(false);
    }

    public async ValueTask<long> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken)
    {
        // Leases come from a pool, as Pocket reads into a reused buffer: neither side pays for fresh memory.
        if (destination.Length <= ChunkSize)
        {
            using var lease = await _database.StringGetLeaseAsync(_root + key).ConfigureAwait(false);
            return lease?.Length ?? throw new CliException($"{Name}: key '{key}' is missing");
        }

        var gets = new List<Task<Lease<byte>?>>();
        for (var (offset, n) = (0, 0); offset < destination.Length; offset += ChunkSize, n++)
        {
            gets.Add(_database.StringGetLeaseAsync(ChunkKey(key, n)));
        }

        long total = 0;
        foreach (var get in gets)
        {
            using var lease = await get.ConfigureAwait(false);
            total += lease?.Length ?? throw new CliException($"{Name}: a chunk of key '{key}' is missing");
        }

        return total;
    }

    public async Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken)
    {
        var chunks = size <= ChunkSize ? 0 : (int)((size + ChunkSize - 1) / ChunkSize);
        var all = new List<RedisKey>(keys.Count * Math.Max(1, chunks));
        foreach (var key in keys)
        {
            if (chunks == 0)
            {
                all.Add(_root + key);
            }

            for (var n = 0; n < chunks; n++)
            {
                all.Add(ChunkKey(key, n));
            }
        }

        foreach (var batch in all.Chunk(512))
        {
            await _database.KeyDeleteAsync(batch).ConfigureAwait(false);
        }
    }

    public async Task<double?> CpuSecondsAsync(CancellationToken cancellationToken)
    {
        var info = await _server.InfoAsync("cpu").ConfigureAwait(false);
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

    public async ValueTask DisposeAsync() => await _multiplexer.DisposeAsync().ConfigureAwait(false);

    private string ChunkKey(string key, int n) => string.Create(CultureInfo.InvariantCulture, $"{_root}{key}:chunk{n}");
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
