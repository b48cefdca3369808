using System.Diagnostics;

namespace Pocket.LoadGenerator;

/// <summary>
/// `--connections N`: each of the N bench clients drives its own connection (its own PocketClient, or its own
/// RESP connection), the shape of N serverless functions, instead of N callers sharing one multiplexed client.
/// Untimed setup (writing the pool, deleting, CPU) goes through the shared target.
/// </summary>
internal sealed class FanInBenchTarget : IBenchTarget
{
    private readonly IBenchTarget _shared;
    private readonly IBenchTarget[] _connections;
    private readonly IAsyncDisposable[] _owned;

    private FanInBenchTarget(IBenchTarget shared, IBenchTarget[] connections, IAsyncDisposable[] owned, double connectMs, int refused)
    {
        _shared = shared;
        _connections = connections;
        _owned = owned;
        ConnectMs = connectMs;
        Refused = refused;
    }

    public string Name => _shared.Name;

    public string? CpuScope => _shared.CpuScope;

    /// <summary>Wall time to open all the connections at once (a connect storm), in milliseconds.</summary>
    public double ConnectMs { get; }

    /// <summary>Connections that could not be opened (refused, reset, timed out); the run goes on with the rest.</summary>
    public int Refused { get; }

    /// <summary>Connections that were opened and drive the load.</summary>
    public int Connections => _connections.Length;

    /// <summary>
    /// Opens <paramref name="count"/> connections at once with <paramref name="connect"/>, which returns the
    /// target of one connection and what to dispose with it.
    /// </summary>
    public static async Task<FanInBenchTarget> ConnectAsync(
        IBenchTarget shared,
        int count,
        Func<CancellationToken, Task<(IBenchTarget Target, IAsyncDisposable Owner)>> connect,
        CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var attempts = Enumerable.Range(0, count).Select(_ => Task.Run(() => connect(cancellationToken), cancellationToken)).ToArray();
        try
        {
            await Task.WhenAll(attempts).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            // Counted below, per connection.
        }
        catch (Exception)
        {
            // Cancelled while connecting: close what did open, so no connection outlives the run.
            foreach (var attempt in attempts.Where(a => a.IsCompletedSuccessfully))
            {
                await attempt.Result.Owner.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }

        var elapsed = clock.Elapsed.TotalMilliseconds;
        var opened = attempts.Where(a => a.IsCompletedSuccessfully).Select(a => a.Result).ToArray();
        var refused = attempts.Count(a => !a.IsCompletedSuccessfully);
        if (opened.Length == 0)
        {
            var why = attempts.Select(a => a.Exception?.GetBaseException()).FirstOrDefault(e => e is not null);
            throw new LoadGeneratorException($"{shared.Name}: none of {count} connections could be opened: {why?.Message}", why);
        }

        return new FanInBenchTarget(shared, opened.Select(o => o.Target).ToArray(), opened.Select(o => o.Owner).ToArray(), elapsed, refused);
    }

    public IBenchTarget ForClient(int client) => _connections[client % _connections.Length];

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken) => _shared.PutAsync(key, value, cancellationToken);

    public ValueTask<long> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken) => _shared.GetAsync(key, destination, cancellationToken);

    public Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken) => _shared.DeleteAsync(prefix, keys, size, cancellationToken);

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) => _shared.CpuSecondsAsync(cancellationToken);

    public ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken) => _shared.ExistsAsync(key, cancellationToken);

    public ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken) => _shared.DeleteOneAsync(key, cancellationToken);

    public Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken) => _shared.CreateListedAsync(prefix, count, cancellationToken);

    public ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken) => _shared.ListAsync(prefix, limit, cancellationToken);

    public ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken) => _shared.CountAsync(prefix, cancellationToken);

    public Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken) => _shared.DropListedAsync(prefix, count, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        foreach (var owner in _owned)
        {
            await owner.DisposeAsync().ConfigureAwait(false);
        }

        await _shared.DisposeAsync().ConfigureAwait(false);
    }
}
