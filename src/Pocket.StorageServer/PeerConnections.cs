using Pocket.Networking;

namespace Pocket.StorageServer;

/// <summary>
/// The connections a storage node keeps to other storage nodes it copies from (CopyExtent): one per peer, made on
/// first use, replaced once broken, at most <see cref="Capacity"/> of them (the least recently used one is closed to
/// make room; a copy still using it fails like one whose source went away, and the drain tries again). Closed on
/// dispose.
/// </summary>
internal sealed class PeerConnections(FrameConnectionOptions options, int capacity) : IDisposable
{
    private readonly Dictionary<string, Entry> _peers = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private long _uses;
    private bool _disposed;

    /// <summary>The most peers kept connected at once.</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Peers connected (or connecting) now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _peers.Count;
            }
        }
    }

    /// <summary>A connected connection to <paramref name="host"/>:<paramref name="port"/>; throws <see cref="ConnectionLostException"/> when the peer cannot be reached.</summary>
    public async Task<FrameConnection> GetAsync(string host, int port, CancellationToken token)
    {
        var key = $"{host}:{port}";
        for (var attempt = 0; ; attempt++)
        {
            Entry entry;
            Entry? evicted = null;
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (!_peers.TryGetValue(key, out entry!))
                {
                    if (_peers.Count >= Capacity)
                    {
                        evicted = _peers.Values.MinBy(e => e.LastUse);
                        _peers.Remove(evicted!.Key);
                    }

                    entry = new Entry(key, FrameConnection.ConnectAsync(host, port, options, CancellationToken.None));
                    _peers[key] = entry;
                }

                entry.LastUse = ++_uses;
            }

            evicted?.Close();
            try
            {
                var connection = await entry.Connection.WaitAsync(token).ConfigureAwait(false);
                if (connection.IsConnected)
                {
                    return connection;
                }
            }
            catch (ConnectionLostException)
            {
                Forget(entry);
                throw;
            }

            // Broken (or closed by the peer as idle): replaced once; if the peer is really gone the new connect fails.
            Forget(entry);
            if (attempt > 0)
            {
                throw new ConnectionLostException($"connection to {key} lost");
            }
        }
    }

    private void Forget(Entry entry)
    {
        lock (_lock)
        {
            if (_peers.TryGetValue(entry.Key, out var current) && current == entry)
            {
                _peers.Remove(entry.Key);
            }
        }

        entry.Close();
    }

    public void Dispose()
    {
        List<Entry> entries;
        lock (_lock)
        {
            _disposed = true;
            entries = [.. _peers.Values];
            _peers.Clear();
        }

        foreach (var entry in entries)
        {
            entry.Close();
        }
    }

    private sealed class Entry(string key, Task<FrameConnection> connection)
    {
        public string Key { get; } = key;

        public Task<FrameConnection> Connection { get; } = connection;

        public long LastUse { get; set; }

        /// <summary>Closes the connection now, or once its connect finishes.</summary>
        public void Close() => _ = Connection.ContinueWith(static t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
