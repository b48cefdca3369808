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

    /// <summary>
    /// Bytes of small objects kept inline in this server, at most. A small put past it, or past
    /// <see cref="MaxObjectMemory"/> because of its inline bytes, is answered <see cref="Status.CapacityExceeded"/> and
    /// the client writes the object through storage nodes instead. Null: <see cref="DefaultInlineShare"/> of
    /// <see cref="EffectiveMaxObjectMemory"/>, at most <see cref="DefaultInlineCapacityCap"/>, so inline bytes never crowd
    /// out the objects' records the bound is for.
    /// </summary>
    public long? InlineCapacity { get; init; }

    /// <summary>The share of the object memory a default <see cref="InlineCapacity"/> takes (a quarter).</summary>
    public const int DefaultInlineShare = 4;

    /// <summary>The largest default <see cref="InlineCapacity"/>: 256 MiB.</summary>
    public const long DefaultInlineCapacityCap = 256L << 20;

    /// <summary>
    /// Bytes of memory this server may hold for objects, over all jobs: each object (or open write) counts its key
    /// (two bytes a character, as .NET holds it), a fixed 200 bytes for its records and its
    /// inline bytes. Past it, creates fail with <see cref="Status.QuotaExceeded"/> naming this bound (a small put whose
    /// inline bytes alone pass it gets <see cref="Status.CapacityExceeded"/>: it fits through storage nodes).
    /// Null: half the memory the process may use (<see cref="GCMemoryInfo.TotalAvailableMemoryBytes"/>, which follows a
    /// container's limit), at least 64 MiB.
    /// </summary>
    public long? MaxObjectMemory { get; init; }

    /// <summary>
    /// The quota of a job registered without one (an older client, or <c>RegisterJob</c> sent without limits). Unlimited
    /// by default: the controller always sends the quota its sizing made, and <see cref="MaxObjectMemory"/> still bounds
    /// every job together.
    /// </summary>
    public JobQuota DefaultJobQuota { get; init; }

    /// <summary>
    /// When a job's end (deregistration, or its keep-after-job objects expiring) frees at least this much object memory,
    /// the server runs one compacting collection that returns free memory to the system (docs/benchmarks.md, "Metadata
    /// object memory"). 0: never.
    /// </summary>
    public long TrimMemoryAfterFreeing { get; init; } = 64L << 20;

    /// <summary><see cref="MaxObjectMemory"/>, or its default for this process.</summary>
    public long EffectiveMaxObjectMemory =>
        MaxObjectMemory ?? Math.Max(64L << 20, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2);

    /// <summary><see cref="InlineCapacity"/>, or its default for this process.</summary>
    public long EffectiveInlineCapacity =>
        InlineCapacity ?? Math.Min(DefaultInlineCapacityCap, EffectiveMaxObjectMemory / DefaultInlineShare);

    /// <summary>How long objects put with keep-after-job outlive their job (read-only, under the job's token).</summary>
    public TimeSpan KeepAfterJobTtl { get; init; } = TimeSpan.FromHours(1);

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// How many ended jobs are remembered (id, when, why) so that a request still carrying one's token is told what
    /// happened, not "unknown job token". About 200 bytes each; 0: none.
    /// </summary>
    public int EndedJobsRemembered { get; init; } = 10_000;

    /// <summary>How long an ended job is remembered for that message.</summary>
    public TimeSpan EndedJobsRetention { get; init; } = TimeSpan.FromHours(1);

    /// <summary>
    /// Jobs of the metadata server this one replaces, lost with it: their tokens are answered
    /// <see cref="Protocol.Status.JobLost"/> (for <see cref="EndedJobsRetention"/>, within <see cref="EndedJobsRemembered"/>).
    /// Empty: a server that replaces none.
    /// </summary>
    public IReadOnlyList<LostJob> LostJobs { get; init; } = [];

    /// <summary>
    /// How long a grant stays valid after the metadata server signs it. Clients do not re-fetch grants: one put or get
    /// must move its bytes within this time, so it is far longer than any normal transfer (a GiB at 10 MB/s takes under
    /// two minutes). It bounds how long a grant a storage node never heard was sealed or forgotten (the node was
    /// unreachable at the time) stays usable; storage nodes allow <c>GrantClockSkew</c> on top for clock differences.
    /// </summary>
    public TimeSpan GrantLifetime { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// How long Abort and Delete (and Commit's background seal) wait for a storage node to confirm it forgot or sealed
    /// their extents. A node
    /// that does not answer in time does not fail the operation: it is retried in the background (and not waited for
    /// again until it answers), and the grants stay usable there at most until they expire.
    /// </summary>
    public TimeSpan RevokeTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How this server connects to storage nodes when a drain copies blocks (TLS settings when the nodes use TLS).</summary>
    public FrameConnectionOptions StorageConnection { get; init; } = new();

    /// <summary>
    /// With several metadata servers, each numbers its jobs apart so job ids are unique across the plane: this server
    /// numbers a name's jobs <see cref="JobNumberOffset"/> + 1, then every <see cref="JobNumberStride"/>-th number on
    /// ("sort-1", "sort-3", ... for the first of two; "sort-2", "sort-4", ... for the second). One server: 0 and 1.
    /// </summary>
    public int JobNumberOffset { get; init; }

    /// <summary>How many metadata servers share the job numbers (see <see cref="JobNumberOffset"/>).</summary>
    public int JobNumberStride { get; init; } = 1;

    public void Validate()
    {
        if (JobNumberStride < 1 || JobNumberOffset < 0 || JobNumberOffset >= JobNumberStride)
        {
            throw new ArgumentException($"job number offset {JobNumberOffset} must lie in [0, stride {JobNumberStride})");
        }

        if (EndedJobsRemembered < 0 || EndedJobsRetention < TimeSpan.Zero)
        {
            throw new ArgumentException("the ended jobs remembered and their retention must be >= 0");
        }

        if (StripeUnit < 4096)
        {
            throw new ArgumentException("stripe unit must be at least 4096 bytes");
        }

        if (HddExtent < StripeUnit)
        {
            throw new ArgumentException("the hdd extent must be at least one stripe unit");
        }

        if (RevokeTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("revoke timeout must be positive");
        }

        if (GrantLifetime <= TimeSpan.Zero)
        {
            throw new ArgumentException("grant lifetime must be positive");
        }

        if (MaxObjectMemory is <= 0)
        {
            throw new ArgumentException("the metadata server's object memory bound must be positive");
        }

        if (InlineCapacity is < 0)
        {
            throw new ArgumentException("the inline capacity must be >= 0 (0: no object inline)");
        }

        if (DefaultJobQuota.FirstInvalid() is { } invalid)
        {
            throw new ArgumentException($"default job quota: {invalid} must be >= 0 (0: no limit)");
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
