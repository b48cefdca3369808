using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Metadata;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.StorageServer;

namespace Pocket.Embedded;

/// <summary>
/// A metadata server and storage nodes in this process, each on its own loopback port (port 0), talking
/// over real sockets exactly as separate processes would.
/// </summary>
public sealed class PocketCluster : IAsyncDisposable
{
    private readonly ILoggerFactory _loggerFactory;
    private readonly List<StorageServer.StorageServer?> _nodes = [];

    private PocketCluster(PocketClusterOptions options, ILoggerFactory loggerFactory, MetadataServer metadata)
    {
        Options = options;
        _loggerFactory = loggerFactory;
        Metadata = metadata;
    }

    public PocketClusterOptions Options { get; }

    public MetadataServer Metadata { get; }

    /// <summary>host:port of the metadata server.</summary>
    public string MetadataAddress => $"127.0.0.1:{Metadata.EndPoint.Port}";

    /// <summary>Storage nodes by index; null once stopped.</summary>
    public IReadOnlyList<StorageServer.StorageServer?> Nodes => _nodes;

    public static async Task<PocketCluster> StartAsync(PocketClusterOptions? options = null, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        options ??= new PocketClusterOptions();
        loggerFactory ??= NullLoggerFactory.Instance;
        var metadata = new MetadataServer(
            new MetadataServerOptions
            {
                ClusterToken = options.ClusterToken,
                Listener = options.Listener with
                {
                    EndPoint = new IPEndPoint(IPAddress.Loopback, options.MetadataPort),
                    WrapHandler = options.MetadataWrapHandler ?? options.Listener.WrapHandler,
                },
                NodeTimeout = options.NodeTimeout,
                SuspectAfter = options.SuspectAfter,
                MaxObjectMemory = options.MaxObjectMemory,
                StorageConnection = options.Connection,
                StripeUnit = options.StripeUnit,
                TimeProvider = options.TimeProvider,
            },
            loggerFactory);
        await metadata.StartAsync(cancellationToken).ConfigureAwait(false);
        var cluster = new PocketCluster(options, loggerFactory, metadata);
        try
        {
            for (var i = 0; i < options.StorageNodes; i++)
            {
                await cluster.AddNodeAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return cluster;
    }

    /// <summary>
    /// Starts one more storage node and waits until it is registered. Returns its index. Without
    /// <paramref name="deviceFactory"/> the node gets its tier's device (<see cref="BlockDevices.Create"/>). A
    /// <paramref name="standby"/> node registers as a warm-pool node and gets no blocks until it is activated.
    /// </summary>
    public async Task<int> AddNodeAsync(long? capacity = null, Func<StorageServerOptions, IBlockDevice>? deviceFactory = null, CancellationToken cancellationToken = default, NodeTier tier = NodeTier.Dram, bool standby = false)
    {
        var node = new StorageServer.StorageServer(
            new StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", Metadata.EndPoint.Port),
                MetadataConnection = Options.Connection,
                PeerConnection = Options.Connection,
                Capacity = capacity ?? Options.NodeCapacity,
                BlockSize = Options.BlockSize,
                HeartbeatInterval = Options.HeartbeatInterval,
                TimeProvider = Options.TimeProvider,
                ClusterToken = Options.ClusterToken,
                Tier = tier,
                Standby = standby,
                DeviceFactory = deviceFactory ?? (o => BlockDevices.Create(o.Tier, o.Capacity, Options.Devices with { Directory = Options.DataDirectory })),
                DramHeadroom = Options.PreTouchMemory ? SpaceReclaimerOptions.DefaultDramHeadroom : 0,
                Listener = Options.Listener with { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) },
            },
            _loggerFactory);
        await node.StartAsync(cancellationToken).ConfigureAwait(false);
        _nodes.Add(node);
        return _nodes.Count - 1;
    }

    /// <summary>Stops a storage node as if its process ended (its data is gone).</summary>
    public async Task StopNodeAsync(int index)
    {
        if (_nodes[index] is { } node)
        {
            _nodes[index] = null;
            await node.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>A client connected to this cluster (a data client: it holds no cluster token; see <see cref="Admin"/>).</summary>
    public Task<PocketClient> ConnectAsync(PocketClientOptions? options = null, CancellationToken cancellationToken = default) =>
        PocketClient.ConnectAsync(MetadataAddress, options ?? new PocketClientOptions(), cancellationToken);

    /// <summary>Cluster administration over <paramref name="client"/>'s connection, with this cluster's token.</summary>
    public PocketAdminClient Admin(PocketClient client) => client.Admin(Options.ClusterToken);

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < _nodes.Count; i++)
        {
            await StopNodeAsync(i).ConfigureAwait(false);
        }

        await Metadata.DisposeAsync().ConfigureAwait(false);
    }
}
