using System.Collections.Concurrent;
using Pocket.Networking;

namespace Pocket.Metadata.Nodes;

/// <summary>
/// The metadata server's own connections to storage nodes (drain copies, seal and forget messages): one per node, made
/// on first use and replaced once it breaks. Thread-safe; never holds the metadata lock while it connects.
/// </summary>
internal sealed class StorageLinks(Func<uint, (string Host, int Port)?> addressOf, FrameConnectionOptions options) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<uint, Lazy<Task<FrameConnection>>> _connections = new();

    /// <summary>
    /// The connection to <paramref name="nodeId"/>, or null when the node is gone (dead or no longer registered).
    /// Throws <see cref="ConnectionLostException"/> when the node cannot be reached.
    /// </summary>
    public async Task<FrameConnection?> GetAsync(uint nodeId, CancellationToken token)
    {
        if (addressOf(nodeId) is not var (host, port))
        {
            return null;
        }

        while (true)
        {
            var lazy = _connections.GetOrAdd(nodeId, _ => new Lazy<Task<FrameConnection>>(() => FrameConnection.ConnectAsync(host, port, options, CancellationToken.None)));
            try
            {
                var connection = await lazy.Value.WaitAsync(token).ConfigureAwait(false);
                if (connection.IsConnected)
                {
                    return connection;
                }

                // Broken (or closed by the node as idle): replaced; if the node is really gone the new connect fails.
                _connections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                connection.Dispose();
            }
            catch (ConnectionLostException)
            {
                _connections.TryRemove(new KeyValuePair<uint, Lazy<Task<FrameConnection>>>(nodeId, lazy));
                throw;
            }
        }
    }

    /// <summary>Closes every connection.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var lazy in _connections.Values)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                await lazy.Value.Result.DisposeAsync().ConfigureAwait(false);
            }
        }

        _connections.Clear();
    }
}
