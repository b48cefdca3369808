using Pocket.Client;

namespace Pocket.Gateway;

/// <summary>
/// The gateway's connections to the metadata servers: one multiplexed client per server, opened when a bucket on it is
/// first opened. A bucket is a job, and a job's namespace lives on the one server its registration named
/// (docs/gateway.md, "Several metadata servers"); buckets recorded before that was kept use the gateway's own server.
/// </summary>
internal sealed class MetadataConnections(PocketClient primary, PocketClientOptions options) : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Task<PocketClient>> _clients = new(StringComparer.OrdinalIgnoreCase) { [primary.MetadataAddress] = Task.FromResult(primary) };

    /// <summary>The server the gateway was started with (also the one for buckets that name none).</summary>
    public PocketClient Primary { get; } = primary;

    /// <summary>The client for <paramref name="address"/> (null: <see cref="Primary"/>), connecting once.</summary>
    public async Task<PocketClient> ForAsync(string? address, CancellationToken cancellationToken)
    {
        if (address is null)
        {
            return Primary;
        }

        Task<PocketClient> connecting;
        lock (_lock)
        {
            if (!_clients.TryGetValue(address, out connecting!) || connecting.IsFaulted || connecting.IsCanceled)
            {
                // Not the caller's token: the connection outlives the request that opened it.
                connecting = PocketClient.ConnectAsync(address, options, CancellationToken.None);
                _clients[address] = connecting;
            }
        }

        return await connecting.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Closes every connection, the primary's included.</summary>
    public async ValueTask DisposeAsync()
    {
        List<Task<PocketClient>> clients;
        lock (_lock)
        {
            clients = [.. _clients.Values];
            _clients.Clear();
        }

        foreach (var client in clients)
        {
            try
            {
                await (await client.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is PocketException or IOException or System.Net.Sockets.SocketException)
            {
                // It never connected: nothing to close.
            }
        }
    }
}
