using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>What <see cref="ProcessCluster"/> starts.</summary>
internal sealed record ProcessClusterOptions
{
    /// <summary>`pocket metadata` children, started first (the first is the controller's primary).</summary>
    public int MetadataServers { get; init; } = 1;

    /// <summary>Dram `pocket storage` children started before the controller (a test may start more through the provisioner).</summary>
    public int StorageNodes { get; init; } = 2;

    /// <summary>Each node's capacity, and the capacity of the one node class the controller sizes jobs with.</summary>
    public long NodeCapacity { get; init; } = 64L << 20;

    /// <summary>Addresses a metadata server may be started at later; they count in every server's job numbering.</summary>
    public IReadOnlyList<string> SpareMetadataAddresses { get; init; } = [];

    /// <summary>The controller's options beyond the shared ones (the fake clock, the sizing, the start timeouts).</summary>
    public Func<ControllerOptions, ControllerOptions> Controller { get; init; } = options => options;
}

/// <summary>
/// A cluster of real children started through the provisioner as `pocket up` starts them (`pocket metadata`, `pocket
/// storage` of this build) and a controller in the test's process whose clock is a <see cref="FakeTimeProvider"/>, so a
/// test decides when telemetry ticks and metadata probes run. Disposing stops the controller, then every child.
/// </summary>
internal sealed class ProcessCluster : IAsyncDisposable
{
    // Generous: two other builds may share the machine's two cores while a child starts.
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);

    private ProcessCluster(FakeTimeProvider time, JobToken token, LocalProcessProvisioner provisioner, IReadOnlyList<ProvisionedMetadata> metadata, IReadOnlyList<ProvisionedNode> nodes, ControllerServer controller)
    {
        Time = time;
        Token = token;
        Provisioner = provisioner;
        Metadata = metadata;
        Nodes = nodes;
        Controller = controller;
    }

    /// <summary>The controller's clock.</summary>
    public FakeTimeProvider Time { get; }

    /// <summary>The cluster token every child and the controller were given.</summary>
    public JobToken Token { get; }

    /// <summary>The provisioner that started the children (and the controller's, for replacements and scaling).</summary>
    public LocalProcessProvisioner Provisioner { get; }

    /// <summary>The metadata servers started before the controller, the primary first.</summary>
    public IReadOnlyList<ProvisionedMetadata> Metadata { get; }

    /// <summary>The storage nodes started before the controller.</summary>
    public IReadOnlyList<ProvisionedNode> Nodes { get; }

    /// <summary>The controller, started.</summary>
    public ControllerServer Controller { get; }

    /// <summary>The controller's last 100 events.</summary>
    public IReadOnlyList<ClusterEvent> Events => Controller.Events.Last(100);

    public static async Task<ProcessCluster> StartAsync(ProcessClusterOptions options, CancellationToken cancellationToken)
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var token = JobToken.NewRandom();
        var provisioner = new LocalProcessProvisioner(
            new LocalProcessProvisionerOptions
            {
                Executable = PocketProcess.Program.File,
                BaseArguments = PocketProcess.Program.Prefix,
                ClusterToken = token,
                StartTimeout = StartTimeout,
                Metadata = new LocalMetadataOptions { StartTimeout = StartTimeout },
                SpareMetadataAddresses = options.SpareMetadataAddresses,
            },
            NullLoggerFactory.Instance);
        ControllerServer? controller = null;
        try
        {
            var slots = options.MetadataServers + options.SpareMetadataAddresses.Count;
            var metadata = new List<ProvisionedMetadata>();
            for (var i = 0; i < options.MetadataServers; i++)
            {
                metadata.Add(await provisioner.StartMetadataAsync(new MetadataServerRequest(0, i, slots), cancellationToken));
            }

            var nodes = new List<ProvisionedNode>();
            for (var i = 0; i < options.StorageNodes; i++)
            {
                nodes.Add(await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, options.NodeCapacity), cancellationToken));
            }

            controller = new ControllerServer(
                options.Controller(new ControllerOptions
                {
                    MetadataAddress = metadata[0].Address,
                    OtherMetadataAddresses = [.. metadata.Skip(1).Select(m => m.Address)],
                    ClusterToken = token,
                    Registry = new JobRegistryOptions
                    {
                        TimeProvider = time,
                        NodeStartTimeout = StartTimeout,
                        Sizing = new SizingOptions { NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = options.NodeCapacity }] },
                    },
                }),
                provisioner,
                NullLoggerFactory.Instance);
            await controller.StartAsync(cancellationToken);
            return new ProcessCluster(time, token, provisioner, metadata, nodes, controller);
        }
        catch
        {
            if (controller is not null)
            {
                await controller.DisposeAsync();
            }

            await provisioner.DisposeAsync();
            throw;
        }
    }

    /// <summary>A client of the metadata server at <paramref name="address"/> (the primary's by default).</summary>
    public Task<PocketClient> ConnectAsync(string? address = null, CancellationToken cancellationToken = default) =>
        PocketClient.ConnectAsync(address ?? Metadata[0].Address, cancellationToken: cancellationToken);

    /// <summary>Steps the fake clock a second at a time (telemetry and probes tick on it) until an event matches.</summary>
    public async Task AdvanceUntilAsync(Func<ClusterEvent, bool> match, CancellationToken cancellationToken)
    {
        while (!Events.Any(match))
        {
            Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(300, cancellationToken);
        }
    }

    /// <summary>
    /// Waits until the server at <paramref name="address"/> lists <paramref name="count"/> nodes live with a share each,
    /// or with exactly <paramref name="capacities"/> (node id to bytes) when given; returns what it lists then.
    /// </summary>
    public async Task<Dictionary<uint, long>> WaitForNodesAsync(string address, int count, Dictionary<uint, long>? capacities, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await using var client = await ConnectAsync(address, cancellationToken);
                var nodes = (await client.Admin(Token).GetNodesAsync(cancellationToken)).Where(n => n.State == NodeState.Live && n.Capacity > 0).ToList();
                if (nodes.Count == count && (capacities is null || nodes.All(n => capacities.GetValueOrDefault(n.Id) == n.Capacity)))
                {
                    return nodes.ToDictionary(n => n.Id, n => n.Capacity);
                }
            }
            catch (PocketException)
            {
                // Not up yet.
            }

            await Task.Delay(100, cancellationToken);
        }
    }

    /// <summary>A loopback address no one listens on now (a spare metadata address).</summary>
    public static string FreeLoopbackAddress()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return string.Create(CultureInfo.InvariantCulture, $"127.0.0.1:{((IPEndPoint)probe.LocalEndPoint!).Port}");
    }

    public static byte[] RandomBytes(int length)
    {
        var bytes = new byte[length];
        Random.Shared.NextBytes(bytes);
        return bytes;
    }

    public async ValueTask DisposeAsync()
    {
        await Controller.DisposeAsync();
        await Provisioner.DisposeAsync();
    }
}
