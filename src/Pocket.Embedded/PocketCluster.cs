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
    private readonly MetadataServer?[] _metadataServers;
    private readonly int[] _metadataPorts;

    private PocketCluster(PocketClusterOptions options, ILoggerFactory loggerFactory, MetadataServer[] metadata)
    {
        Options = options;
        _loggerFactory = loggerFactory;
        Metadata = metadata[0];
        _metadataServers = metadata;
        _metadataPorts = [.. metadata.Select(m => m.EndPoint.Port)];
    }

    /// <summary>Every metadata server by index (<see cref="PocketClusterOptions.MetadataServers"/>); null once stopped.</summary>
    public IReadOnlyList<MetadataServer?> MetadataServers => _metadataServers;

    /// <summary>host:port of each metadata server, by index (the address stays when the server is stopped and started again).</summary>
    public IReadOnlyList<string> MetadataAddresses => [.. _metadataPorts.Select(p => $"127.0.0.1:{p}")];

    public PocketClusterOptions Options { get; }

    public MetadataServer Metadata { get; }

    /// <summary>host:port of the metadata server.</summary>
    public string MetadataAddress => $"127.0.0.1:{_metadataPorts[0]}";

    /// <summary>Storage nodes by index; null once stopped.</summary>
    public IReadOnlyList<StorageServer.StorageServer?> Nodes => _nodes;

    public static async Task<PocketCluster> StartAsync(PocketClusterOptions? options = null, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        options ??= new PocketClusterOptions();
        loggerFactory ??= NullLoggerFactory.Instance;
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MetadataServers, 1);
        var servers = new List<MetadataServer>();
        try
        {
            for (var i = 0; i < options.MetadataServers; i++)
            {
                servers.Add(await StartMetadataAsync(options, loggerFactory, i, i == 0 ? options.MetadataPort : 0, cancellationToken).ConfigureAwait(false));
            }
        }
        catch
        {
            foreach (var server in servers)
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }

        var cluster = new PocketCluster(options, loggerFactory, [.. servers]);
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

    private static async Task<MetadataServer> StartMetadataAsync(PocketClusterOptions options, ILoggerFactory loggerFactory, int index, int port, CancellationToken cancellationToken)
    {
        var metadata = new MetadataServer(
            new MetadataServerOptions
            {
                ClusterToken = options.ClusterToken,
                Listener = options.Listener with
                {
                    EndPoint = new IPEndPoint(IPAddress.Loopback, port),
                    WrapHandler = options.MetadataWrapHandler ?? options.Listener.WrapHandler,
                },
                NodeTimeout = options.NodeTimeout,
                SuspectAfter = options.SuspectAfter,
                MaxObjectMemory = options.MaxObjectMemory,
                InlineCapacity = options.InlineCapacity,
                StorageConnection = options.Connection,
                StripeUnit = options.StripeUnit,
                TimeProvider = options.TimeProvider,
                JobNumberOffset = index,
                JobNumberStride = options.MetadataServers,
            },
            loggerFactory);
        await metadata.StartAsync(cancellationToken).ConfigureAwait(false);
        return metadata;
    }

    /// <summary>Stops metadata server <paramref name="index"/> as if its process ended: its jobs are gone, the nodes give its segments to the others.</summary>
    public async Task StopMetadataAsync(int index)
    {
        if (_metadataServers[index] is { } server)
        {
            _metadataServers[index] = null;
            await server.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Starts a fresh, empty metadata server at stopped server <paramref name="index"/>'s address (a replacement); the nodes join it by themselves.</summary>
    public async Task RestartMetadataAsync(int index, CancellationToken cancellationToken = default)
    {
        if (_metadataServers[index] is not null)
        {
            throw new InvalidOperationException($"metadata server {index} is running");
        }

        _metadataServers[index] = await StartMetadataAsync(Options, _loggerFactory, index, _metadataPorts[index], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>How long a new node may take to serve every metadata server (real time: its rounds run on the cluster's clock).</summary>
    private static readonly TimeSpan JoinWait = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Starts one more storage node and waits until it is registered (with several metadata servers: with each, holding
    /// part of the node). Returns its index. Without
    /// <paramref name="deviceFactory"/> the node gets its tier's device (<see cref="BlockDevices.Create"/>). A
    /// <paramref name="standby"/> node registers as a warm-pool node and gets no blocks until it is activated.
    /// </summary>
    public async Task<int> AddNodeAsync(long? capacity = null, Func<StorageServerOptions, IBlockDevice>? deviceFactory = null, CancellationToken cancellationToken = default, NodeTier tier = NodeTier.Dram, bool standby = false)
    {
        var node = new StorageServer.StorageServer(
            new StorageServerOptions
            {
                Metadata = new DnsEndPoint("127.0.0.1", _metadataPorts[0]),
                OtherMetadata = [.. _metadataPorts.Skip(1).Select(p => new DnsEndPoint("127.0.0.1", p))],
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
        if (_metadataServers.Length > 1 && _metadataServers.All(m => m is not null))
        {
            // A registration past its bound (a loaded machine) leaves that server to the node's next round, and a job placed
            // there meanwhile would find no node of its own share (by the node's code; not seen in a run).
            try
            {
                await node.ServingAllMetadataServers.WaitAsync(JoinWait, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new InvalidOperationException($"storage node {node.NodeId} did not join all {_metadataServers.Length} metadata servers within {JoinWait.TotalSeconds:0} s");
            }
        }

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

        for (var i = 0; i < _metadataServers.Length; i++)
        {
            await StopMetadataAsync(i).ConfigureAwait(false);
        }
    }
}
