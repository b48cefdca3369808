using Pocket.Networking;
using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>Settings of the metadata server.</summary>
public sealed record MetadataServerOptions
{
    public FrameServerOptions Listener { get; init; } = new();

    /// <summary>
    /// When set, node registration and job administration must carry this token in the frame header
    /// (the controller and storage nodes know it; clients do not).
    /// </summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>
    /// A node with no heartbeat for this long is declared dead: its blocks are lost, and if it comes back it registers as
    /// a new, empty node. (A node whose process ends is dead at once: its registration connection closes.)
    /// </summary>
    public TimeSpan NodeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A node with no heartbeat for this long (and less than <see cref="NodeTimeout"/>) is suspect: no new blocks, and
    /// readers of its blocks get <see cref="Status.NodeUnavailable"/> at once instead of a request that hangs; its next
    /// heartbeat makes it live again with its blocks (a stalled process, a paused VM, a short network cut).
    /// </summary>
    public TimeSpan SuspectAfter { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Largest piece of an object placed on one node before the next piece goes elsewhere.</summary>
    public int StripeUnit { get; init; } = 1 << 20;

    /// <summary>
    /// Largest piece placed on one hdd node at once (at least <see cref="StripeUnit"/>): a disk reads a long
    /// contiguous run far faster than scattered stripe units, so hdd nodes take several units in one run.
    /// </summary>
    public int HddExtent { get; init; } = 4 << 20;

    /// <summary>Bytes of small objects kept inline in this server, at most.</summary>
    public long InlineCapacity { get; init; } = 256L << 20;

    /// <summary>How long objects put with keep-after-job outlive their job (read-only, under the job's token).</summary>
    public TimeSpan KeepAfterJobTtl { get; init; } = TimeSpan.FromHours(1);

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>How this server connects to storage nodes when a drain copies blocks (TLS settings when the nodes use TLS).</summary>
    public FrameConnectionOptions StorageConnection { get; init; } = new();

    public void Validate()
    {
        if (StripeUnit < 4096)
        {
            throw new ArgumentException("stripe unit must be at least 4096 bytes");
        }

        if (HddExtent < StripeUnit)
        {
            throw new ArgumentException("the hdd extent must be at least one stripe unit");
        }

        if (NodeTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("node timeout must be positive");
        }

        if (SuspectAfter <= TimeSpan.Zero)
        {
            throw new ArgumentException("the suspect time must be positive");
        }
    }
}
