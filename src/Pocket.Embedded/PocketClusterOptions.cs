using Pocket.Protocol;

namespace Pocket.Embedded;

/// <summary>Shape of an in-process cluster.</summary>
public sealed record PocketClusterOptions
{
    public int StorageNodes { get; init; } = 2;

    /// <summary>
    /// Metadata servers (1 by default). With more, each storage node serves all of them, its blocks shared out in
    /// segments (docs/architecture.md, "Several metadata servers"); the first is <see cref="PocketCluster.Metadata"/>.
    /// </summary>
    public int MetadataServers { get; init; } = 1;

    /// <summary>Loopback port of the metadata server; 0 picks a free one (see <see cref="PocketCluster.MetadataAddress"/>).</summary>
    public int MetadataPort { get; init; }

    /// <summary>Capacity of each storage node, bytes.</summary>
    public long NodeCapacity { get; init; } = 256L << 20;

    public int BlockSize { get; init; } = 64 << 10;

    public int StripeUnit { get; init; } = 1 << 20;

    /// <summary>A node silent this long is dead (<see cref="Pocket.Metadata.MetadataServerOptions.NodeTimeout"/>).</summary>
    public TimeSpan NodeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A node silent this long is suspect (<see cref="Pocket.Metadata.MetadataServerOptions.SuspectAfter"/>).</summary>
    public TimeSpan SuspectAfter { get; init; } = TimeSpan.FromSeconds(3);

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Token needed to register nodes and jobs; a random one when not given.</summary>
    public JobToken ClusterToken { get; init; } = JobToken.NewRandom();

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// Listener settings of the metadata server and the nodes (idle timeout and its clock, TLS); the end point is
    /// always loopback, the metadata server's on <see cref="MetadataPort"/>.
    /// </summary>
    public Pocket.Networking.FrameServerOptions Listener { get; init; } = new();

    /// <summary>
    /// Wraps the metadata server's handler only (e.g. to meter its requests for its own metrics registry); the nodes
    /// keep <see cref="Listener"/>'s. Null: the metadata server keeps <see cref="Listener"/>'s too.
    /// </summary>
    public Func<Pocket.Networking.IFrameHandler, Pocket.Networking.IFrameHandler>? MetadataWrapHandler { get; init; }

    /// <summary>
    /// How the servers connect to each other (the nodes to the metadata server, the metadata server to nodes for drains):
    /// with a TLS <see cref="Listener"/>, a TLS host name and a check that trusts its certificate.
    /// </summary>
    public Pocket.Networking.FrameConnectionOptions Connection { get; init; } = new();

    /// <summary>Where ssd and hdd nodes keep their files (default: a folder in the temp directory).</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Queue depths and page-cache use of the ssd and hdd devices (directory and pre-touch come from the options above).</summary>
    public Pocket.StorageServer.TierDeviceOptions Devices { get; init; } = new();

    /// <summary>The metadata server's bound on object memory (<see cref="Pocket.Metadata.MetadataServerOptions.MaxObjectMemory"/>); null: its default.</summary>
    public long? MaxObjectMemory { get; init; }

    /// <summary>The metadata server's bound on inline bytes (<see cref="Pocket.Metadata.MetadataServerOptions.InlineCapacity"/>); null: its default.</summary>
    public long? InlineCapacity { get; init; }

    /// <summary>Keep a headroom of each dram node's free memory faulted in ahead of writes (off saves time in small tests).</summary>
    public bool PreTouchMemory { get; init; } = true;
}
