using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Protocol;

namespace Pocket.Controller.Contracts;

// The controller's HTTP/JSON contract (docs/controller.md): the controller answers with these records and
// PocketControllerClient hands the same records to its callers, so there is one set and it cannot drift. Their JSON
// is camelCase with nulls left out; tiers, node states and tokens are typed here and written as the wire's text
// ("dram", "live", 32 hex digits) by the converters on their properties, whatever options serialize them.

/// <summary>Body of <c>POST /v1/jobs</c>. Hints are optional; throughput and capacity may be numbers or strings with units.</summary>
/// <param name="Name">Job name (<see cref="JobName.Rule"/>); the id is the name plus a counter.</param>
/// <param name="Functions">Concurrent functions of the job.</param>
/// <param name="PeakThroughput">Peak throughput: bits/s as a number, or text such as "2Gbps", "500 Mb/s", "1GB/s".</param>
/// <param name="Capacity">Most bytes stored at once: a number, or text such as "10GiB", "512MB".</param>
/// <param name="LatencySensitive">Whether small requests must be fast (DRAM). Default true.</param>
public sealed record RegisterJobRequest(string Name, int? Functions, JsonElement? PeakThroughput, JsonElement? Capacity, bool? LatencySensitive)
{
    /// <summary>Limit on the bytes the job stores: a number, or text such as "512MB"; 0: no limit. Absent: derived from the sizing.</summary>
    public JsonElement? MaxCapacity { get; init; }

    /// <summary>Limit on the job's objects; 0: no limit. Absent: derived from the sizing.</summary>
    public long? MaxObjects { get; init; }

    /// <summary>Limit on the UTF-8 bytes of the job's keys: a number, or text such as "16MiB"; 0: no limit. Absent: derived from the sizing.</summary>
    public JsonElement? MaxKeyBytes { get; init; }

    /// <summary>How long the job may go without a request before it is reclaimed: seconds as a number, or text such as "1h". Absent: the controller's default.</summary>
    public JsonElement? Lease { get; init; }
}

/// <summary>A node of a job and the share of the job's new blocks it receives.</summary>
public sealed record JobNodeResponse(uint Id, string Address, double Weight);

/// <summary>
/// Answer to <c>POST /v1/jobs</c>: the only place the job token is shown. Open the job with
/// <see cref="PocketClientExtensions.OpenJob(Client.PocketClient, RegisterJobResponse)"/>.
/// </summary>
/// <param name="JobId">Job id, e.g. "sort-3".</param>
/// <param name="Token">The job's secret: every data request carries it. Only the registration shows it.</param>
/// <param name="Tier">The tier the controller chose.</param>
/// <param name="Nodes">The job's nodes and weights.</param>
/// <param name="LeaseSeconds">A job that makes no request for this long is reclaimed as if deregistered.</param>
/// <param name="ThroughputBound">True when throughput decided the number of nodes, false when capacity did.</param>
/// <param name="Metadata">The metadata server, host:port, for the data path.</param>
/// <param name="ThroughputBitsPerSecond">Throughput the job was sized for.</param>
/// <param name="CapacityBytes">Capacity the job was sized for.</param>
/// <param name="NodesNeeded">Whole nodes of the tier's class the job needs.</param>
public sealed record RegisterJobResponse(
    string JobId,
    [property: JsonConverter(typeof(JobTokenJsonConverter))] JobToken Token,
    [property: JsonConverter(typeof(TierJsonConverter))] NodeTier Tier,
    IReadOnlyList<JobNodeResponse> Nodes,
    double LeaseSeconds,
    bool ThroughputBound,
    string Metadata,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded)
{
    /// <summary>The limits the metadata server enforces for the job (0: none of that kind); past one, requests fail with QuotaExceeded.</summary>
    public JobQuota? Quota { get; init; }

    /// <summary><see cref="LeaseSeconds"/> as a time span.</summary>
    [JsonIgnore]
    public TimeSpan Lease => TimeSpan.FromSeconds(LeaseSeconds);

    /// <summary>The id only: a record's generated text would print the token into logs.</summary>
    public override string ToString() => $"job {JobId}";
}

/// <summary>
/// What a job stores and how busy it is, from the metadata server. BytesByTier: the job's block bytes per tier
/// ("dram", "ssd", "hdd"); more than one tier when its own was full and data spilled.
/// </summary>
public sealed record JobUsageResponse(
    long Objects,
    long BlockBytes,
    long InlineBytes,
    long Requests,
    [property: JsonConverter(typeof(TierDictionaryJsonConverter<long>))] IReadOnlyDictionary<NodeTier, long>? BytesByTier = null)
{
    /// <summary>Bytes stored (blocks and inline) integrated over time on the telemetry tick, GB-seconds (1 GB = 10^9 bytes).</summary>
    public double GbSeconds { get; init; }

    /// <summary>The blocks' GB-seconds per tier ("dram", "ssd", "hdd").</summary>
    [JsonConverter(typeof(TierDictionaryJsonConverter<double>))]
    public IReadOnlyDictionary<NodeTier, double> GbSecondsByTier { get; init; } = new Dictionary<NodeTier, double>();

    /// <summary>UTF-8 bytes of the job's keys (what its key-byte quota limits).</summary>
    public long KeyBytes { get; init; }

    /// <summary>When metering began (the first telemetry tick after registration); null before it.</summary>
    public DateTimeOffset? MeteredSince { get; init; }
}

/// <summary>A job as <c>GET /v1/jobs</c> shows it (never with its token).</summary>
/// <param name="JobId">Job id.</param>
/// <param name="Name">The name it registered with.</param>
/// <param name="Tier">Its tier.</param>
/// <param name="Nodes">Its nodes and weights.</param>
/// <param name="ThroughputBound">True when throughput decided its number of nodes.</param>
/// <param name="ThroughputBitsPerSecond">Throughput it was sized for.</param>
/// <param name="CapacityBytes">Capacity it was sized for.</param>
/// <param name="NodesNeeded">Whole nodes of the tier's class it needs.</param>
/// <param name="RegisteredAt">When it registered.</param>
/// <param name="LeaseExpiresAt">When it is reclaimed unless it makes a request before.</param>
/// <param name="Hints">The hints it gave.</param>
/// <param name="Usage">What it stores and used: read now for one job (<c>GET /v1/jobs/{id}</c>), as of the last telemetry tick in <c>GET /v1/cluster</c> (null before its first tick), never in <c>GET /v1/jobs</c>.</param>
public sealed record JobResponse(
    string JobId,
    string Name,
    [property: JsonConverter(typeof(TierJsonConverter))] NodeTier Tier,
    IReadOnlyList<JobNodeResponse> Nodes,
    bool ThroughputBound,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LeaseExpiresAt,
    JobHints Hints,
    JobUsageResponse? Usage)
{
    /// <summary>The limits the metadata server enforces for the job (0: none of that kind).</summary>
    public JobQuota? Quota { get; init; }
}

/// <summary>
/// Answer to <c>GET /v1/jobs/{id}/credentials</c> (cluster token only): what opens a job registered elsewhere, for the
/// S3 gateway (a job is a bucket; its access key is the job id, its secret key the token) and the CLI.
/// </summary>
/// <param name="JobId">Job id.</param>
/// <param name="Name">The name it registered with (a bucket made through S3: the bucket's name).</param>
/// <param name="Token">The job's token.</param>
/// <param name="Metadata">The metadata server holding the job, host:port.</param>
public sealed record JobCredentialsResponse(
    string JobId,
    string Name,
    [property: JsonConverter(typeof(JobTokenJsonConverter))] JobToken Token,
    string Metadata)
{
    /// <summary>The id only: a record's generated text would print the token into logs.</summary>
    public override string ToString() => $"job {JobId}";
}

/// <summary>Answer to <c>DELETE /v1/jobs/{id}</c>.</summary>
public sealed record DeleteJobResponse(string JobId, long ObjectsFreed, long BytesFreed);

/// <summary>Bytes of a node: what it offers and what is stored.</summary>
public sealed record NodeCapacityResponse(long Total, long Used);

/// <summary>Network traffic of a node over the last second.</summary>
public sealed record NodeNetworkResponse(double RxBytesPerSecond, double TxBytesPerSecond);

/// <summary>What jobs hold of a node: the larger of its bandwidth and capacity shares, and both amounts.</summary>
public sealed record NodeAllocationResponse(double Share, double BitsPerSecond, long Bytes);

/// <summary>A storage node in <c>GET /v1/cluster</c>.</summary>
/// <param name="Id">Node id.</param>
/// <param name="Address">host:port.</param>
/// <param name="Tier">Its tier.</param>
/// <param name="State">Live, draining, drained, standby or dead.</param>
/// <param name="Capacity">Bytes it offers and bytes stored on it.</param>
/// <param name="Cpu">CPU use over the last second, as a fraction of all the host's cores (0 to 1).</param>
/// <param name="Network">Its traffic over the last second.</param>
/// <param name="Allocated">What jobs hold of it.</param>
public sealed record NodeResponse(
    uint Id,
    string Address,
    [property: JsonConverter(typeof(TierJsonConverter))] NodeTier Tier,
    [property: JsonConverter(typeof(NodeStateJsonConverter))] NodeState State,
    NodeCapacityResponse Capacity,
    double Cpu,
    NodeNetworkResponse Network,
    NodeAllocationResponse Allocated);

/// <summary>Answer to <c>GET /v1/cluster</c>.</summary>
/// <param name="Metadata">The (first) metadata server's address.</param>
/// <param name="Nodes">
/// Every storage node the metadata servers list, once each: with several servers a node's capacity and used bytes
/// are the sums of every server's share of it, and its state the most telling of theirs (docs/controller.md).
/// </param>
/// <param name="Jobs">The running jobs.</param>
/// <param name="Host">The host's budget for new nodes, when the controller starts nodes as local processes; else null.</param>
public sealed record ClusterResponse(string Metadata, IReadOnlyList<NodeResponse> Nodes, IReadOnlyList<JobResponse> Jobs, HostBudgetResponse? Host = null)
{
    /// <summary>Every metadata server the controller places jobs on, in order (the first is <see cref="Metadata"/>); null from an older controller.</summary>
    public IReadOnlyList<MetadataServerResponse>? MetadataServers { get; init; }
}

/// <summary>One metadata server in <c>GET /v1/cluster</c>.</summary>
/// <param name="Address">host:port, what registrations on it name.</param>
/// <param name="Reachable">Whether it answered the controller's last node poll.</param>
/// <param name="Jobs">The controller's running jobs on it.</param>
/// <param name="RequestsPerSecond">Requests its jobs made per second over the last telemetry interval.</param>
/// <param name="Error">Why it did not answer, when it did not.</param>
public sealed record MetadataServerResponse(string Address, bool Reachable, int Jobs, double RequestsPerSecond, string? Error = null)
{
    /// <summary>
    /// CPU its process used per second over the last telemetry interval, as a fraction of one core (1.5: one and a
    /// half cores); null before the second reading, or from a server that does not report it.
    /// </summary>
    public double? Cpu { get; init; }

    /// <summary>The same CPU as a fraction of every processor the server may use (its host's share).</summary>
    public double? HostCpu { get; init; }

    /// <summary>Job requests the server itself handled per second over the last telemetry interval (every job, ended ones too).</summary>
    public double? ServerRequestsPerSecond { get; init; }

    /// <summary>
    /// <c>serving</c> (takes new jobs), <c>joining</c> (just started; takes jobs once the storage nodes have joined it),
    /// <c>draining</c> (takes no new jobs; stopped when its jobs have ended) or <c>lost</c> (not answering; being replaced).
    /// </summary>
    public string? State { get; init; }
}

/// <summary>
/// A host's memory and disk as a local provisioner counts them before it starts a node: what is available, what the
/// running nodes were promised and do not hold yet, what is kept for the rest of the host, and what is left for
/// new nodes. Disk figures are those of the data directory's file system (ssd and hdd nodes); null directory: none.
/// </summary>
public sealed record HostBudgetResponse(
    long MemoryTotalBytes,
    long MemoryAvailableBytes,
    long MemoryPromisedBytes,
    long MemoryReserveBytes,
    string? Directory,
    long DiskTotalBytes,
    long DiskFreeBytes,
    long DiskPromisedBytes,
    long DiskReserveBytes)
{
    /// <summary>Memory a new node may take: available, less what running nodes were promised, less the reserve.</summary>
    public long MemoryLeftBytes => Math.Max(0, MemoryAvailableBytes - MemoryPromisedBytes - MemoryReserveBytes);

    /// <summary>Disk a new ssd or hdd node may take, the same way.</summary>
    public long DiskLeftBytes => Directory is null ? 0 : Math.Max(0, DiskFreeBytes - DiskPromisedBytes - DiskReserveBytes);
}

/// <summary>
/// Answer to <c>GET /healthz</c>: "ok" with the live nodes; "degraded" (still HTTP 200: the controller serves, on the
/// metadata servers that answer) with the ones that do not in <see cref="MetadataDown"/>; or "unavailable" (HTTP 503)
/// with the reason when no metadata server answers.
/// </summary>
public sealed record HealthResponse(string Status, int? Nodes, string? Error)
{
    /// <summary>The metadata servers that do not answer or are not yet replaced, longest down first; null when none.</summary>
    public IReadOnlyList<MetadataServerDownResponse>? MetadataDown { get; init; }

    /// <summary>True when the controller reaches every metadata server ("ok").</summary>
    [JsonIgnore]
    public bool IsHealthy => Status == "ok";

    /// <summary>True when some metadata server is down but the controller still serves on the others ("degraded").</summary>
    [JsonIgnore]
    public bool IsDegraded => Status == "degraded";
}

/// <summary>A metadata server that is down, in <see cref="HealthResponse.MetadataDown"/>.</summary>
/// <param name="Address">Its address.</param>
/// <param name="Since">Its first failed probe or read of this outage (controller clock).</param>
/// <param name="State">"not answering" (its jobs still stand), "lost" (its jobs ended; no replacement is starting) or "replacing".</param>
/// <param name="Error">The last failure.</param>
public sealed record MetadataServerDownResponse(string Address, DateTimeOffset Since, string State, string? Error);

/// <summary>Every failed request: what went wrong and, for bad input, which field.</summary>
public sealed record ErrorResponse(string Error, string? Field);

/// <summary>One sample of a node in <c>GET /v1/cluster/history</c>.</summary>
public sealed record NodeSampleResponse(DateTimeOffset Time, [property: JsonConverter(typeof(NodeStateJsonConverter))] NodeState State, long Capacity, long Used, double Cpu, double RxBytesPerSecond, double TxBytesPerSecond, long MovedBytes);

/// <summary>A node's recent samples, oldest first.</summary>
public sealed record NodeHistoryResponse(uint Id, [property: JsonConverter(typeof(TierJsonConverter))] NodeTier Tier, IReadOnlyList<NodeSampleResponse> Samples);

/// <summary>Answer of <c>GET /v1/cluster/history</c>.</summary>
public sealed record HistoryResponse(double IntervalSeconds, IReadOnlyList<NodeHistoryResponse> Nodes);

/// <summary>One entry of <c>GET /v1/events</c>.</summary>
public sealed record EventResponse(DateTimeOffset Time, string Kind, uint? Node, string Reason);
