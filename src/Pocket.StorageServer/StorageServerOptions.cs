using System.Net;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Storage;

namespace Pocket.StorageServer;

/// <summary>Settings of one storage node.</summary>
public sealed record StorageServerOptions
{
    public FrameServerOptions Listener { get; init; } = new();

    /// <summary>Host name clients use to reach this node; defaults to the listening address.</summary>
    public string? AdvertisedHost { get; init; }

    public NodeTier Tier { get; init; } = NodeTier.Dram;

    /// <summary>
    /// Register as a standby (warm-pool) node: connected and heartbeating, but given no blocks until the controller
    /// activates it. A re-registration (after the metadata server restarts) is standby again.
    /// </summary>
    public bool Standby { get; init; }

    /// <summary>Bytes this node stores at most.</summary>
    public long Capacity { get; init; } = 1L << 30;

    /// <summary>Allocation unit. 64 KiB wastes at most 64 KiB per object and still moves data in large extents.</summary>
    public int BlockSize { get; init; } = 64 << 10;

    /// <summary>The metadata server to register with.</summary>
    public required DnsEndPoint Metadata { get; init; }

    /// <summary>
    /// Further metadata servers this node serves besides <see cref="Metadata"/>: its blocks are cut into 64 segments, each
    /// held by one server at a time, and it registers with each under its own grant secret (docs/architecture.md,
    /// "Several metadata servers"). Empty (the default): the node serves one server with all its blocks.
    /// </summary>
    public IReadOnlyList<DnsEndPoint> OtherMetadata { get; init; } = [];

    /// <summary>How to connect to the metadata server (TLS: <see cref="FrameConnectionOptions.TlsHost"/> and its certificate check).</summary>
    public FrameConnectionOptions MetadataConnection { get; init; } = new();

    /// <summary>How to connect to other storage nodes this node copies extents from (CopyExtent, during drains).</summary>
    public FrameConnectionOptions PeerConnection { get; init; } = new();

    /// <summary>Connections to other storage nodes kept open at most; the least recently used one is closed beyond.</summary>
    public int MaxPeerConnections { get; init; } = 16;

    /// <summary>Bytes a copy reads from its source per request (bounded, so a large extent needs no large buffer).</summary>
    internal int CopyChunkSize { get; init; } = 1 << 20;

    /// <summary>
    /// Answers CopyExtent as a node that predates it does (UnknownOpcode), so drains copy to this node through the
    /// metadata server: for mixed-version tests and benchmarks of that path, not for deployments.
    /// </summary>
    public bool CopyExtentDisabled { get; init; }

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// With several metadata servers: how long one may leave heartbeats unanswered, its connection still open, before
    /// this node takes its share back for the others. The default is the servers' default node timeout, after which
    /// the silent server has declared this node dead anyway.
    /// </summary>
    public TimeSpan MetadataSilenceLimit { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Makes the device; null means the tier's own device (<see cref="BlockDevices.Create"/>) of <see cref="Capacity"/> bytes.</summary>
    public Func<StorageServerOptions, Pocket.Storage.IBlockDevice>? DeviceFactory { get; init; }

    /// <summary>The clock grant expiry is checked against (and the heartbeat timer's).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// How far this host's clock may run ahead of the metadata server's: a grant is refused once its expiry plus this
    /// allowance has passed. Hosts kept in sync by NTP differ by milliseconds; a minute covers a host whose sync lapsed.
    /// </summary>
    public TimeSpan GrantClockSkew { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Free memory a dram node keeps faulted in ahead of writes and never gives back (the lowest free space, where
    /// the metadata server allocates next); 0 keeps none (first writes then fault fresh memory themselves).
    /// </summary>
    public long DramHeadroom { get; init; } = SpaceReclaimerOptions.DefaultDramHeadroom;

    /// <summary>How long a dram node's memory stays free (outside the headroom) before it goes back to the OS.</summary>
    public TimeSpan DramReleaseDelay { get; init; } = SpaceReclaimerOptions.DefaultDramReleaseDelay;

    /// <summary>The cluster token the metadata server asks of registering nodes.</summary>
    public JobToken ClusterToken { get; init; }

    public void Validate()
    {
        if (Capacity < BlockSize)
        {
            throw new ArgumentException($"capacity {Capacity} is smaller than one block ({BlockSize})");
        }

        if (GrantClockSkew < TimeSpan.Zero)
        {
            throw new ArgumentException("grant clock skew must not be negative");
        }

        if (MaxPeerConnections < 1)
        {
            throw new ArgumentException("at least one peer connection is needed for copies");
        }

        if (CopyChunkSize < 4096 || CopyChunkSize > ProtocolLimits.Default.MaxDataBody)
        {
            throw new ArgumentException($"copy chunk {CopyChunkSize} must be between 4 KiB and {ProtocolLimits.Default.MaxDataBody} bytes");
        }

        if (DramHeadroom < 0)
        {
            throw new ArgumentException($"dram headroom {DramHeadroom} must not be negative");
        }

        if (DramReleaseDelay < TimeSpan.Zero)
        {
            throw new ArgumentException("dram release delay must not be negative");
        }

        if (MetadataSilenceLimit <= TimeSpan.Zero)
        {
            throw new ArgumentException("metadata silence limit must be positive");
        }

        if (HeartbeatInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("heartbeat interval must be positive");
        }
    }
}
