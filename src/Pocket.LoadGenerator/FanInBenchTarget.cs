using System.Diagnostics;

namespace Pocket.LoadGenerator;

/// <summary>
/// `--connections N`: each of the N bench clients drives its own connection (its own PocketClient, or its own
/// RESP connection), the shape of N serverless functions, instead of N callers sharing one multiplexed client.
/// Untimed setup (writing the pool, deleting, CPU) goes through the shared target.
/// </summary>
internal sealed class FanInBenchTarget : DelegatingBenchTarget
{
    private readonly IBenchTarget[] _connections;
    private readonly IAsyncDisposable[] _owned;

    private FanInBenchTarget(IBenchTarget shared, IBenchTarget[] connections, IAsyncDisposable[] owned, double connectMs, int refused, string? refusal)
        : base(shared)
    {
        _connections = connections;
        _owned = owned;
        ConnectMs = connectMs;
        Refused = refused;
        Refusal = refusal;
    }

    /// <summary>Wall time to open all the connections at once (a connect storm), in milliseconds.</summary>
    public double ConnectMs { get; }

    /// <summary>Connections that could not be opened (refused, reset, timed out); the run goes on with the rest.</summary>
    public int Refused { get; }

    /// <summary>Why the first of the <see cref="Refused"/> connections could not be opened (null when none was refused).</summary>
    public string? Refusal { get; }

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
        var why = attempts.Select(a => a.Exception?.GetBaseException()).FirstOrDefault(e => e is not null);
        if (opened.Length == 0)
        {
            throw new LoadGeneratorException($"{shared.Name}: none of {count} connections could be opened: {why?.Message}", why);
        }

        return new FanInBenchTarget(shared, opened.Select(o => o.Target).ToArray(), opened.Select(o => o.Owner).ToArray(), elapsed, refused, why?.Message);
    }

    public override IBenchTarget ForClient(int client) => _connections[client % _connections.Length];

    public override async ValueTask DisposeAsync()
    {
        foreach (var owner in _owned)
        {
            await owner.DisposeAsync().ConfigureAwait(false);
        }

        await Shared.DisposeAsync().ConfigureAwait(false);
    }
}
