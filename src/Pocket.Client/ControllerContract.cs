using System.Text.Json;

namespace Pocket.Client;

// The controller's HTTP/JSON contract (docs/controller.md): the controller answers with these records and
// PocketControllerClient reads them, so the two cannot drift apart. Their JSON is camelCase with nulls left out.

/// <summary>Body of <c>POST /v1/jobs</c>. Hints are optional; throughput and capacity may be numbers or strings with units.</summary>
/// <param name="Name">Job name: 1-64 letters, digits, '-', '_' or '.'; the id is the name plus a counter.</param>
/// <param name="Functions">Concurrent functions of the job.</param>
/// <param name="PeakThroughput">Peak throughput: bits/s as a number, or text such as "2Gbps", "500 Mb/s", "1GB/s".</param>
/// <param name="Capacity">Most bytes stored at once: a number, or text such as "10GiB", "512MB".</param>
/// <param name="LatencySensitive">Whether small requests must be fast (DRAM). Default true.</param>
public sealed record RegisterJobRequest(string Name, int? Functions, JsonElement? PeakThroughput, JsonElement? Capacity, bool? LatencySensitive);

/// <summary>A node of a job and the share of the job's new blocks it receives.</summary>
public sealed record JobNodeResponse(uint Id, string Address, double Weight);

/// <summary>Answer to <c>POST /v1/jobs</c>: the only place the job token is shown.</summary>
public sealed record RegisterJobResponse(
    string JobId,
    string Token,
    string Tier,
    IReadOnlyList<JobNodeResponse> Nodes,
    double LeaseSeconds,
    bool ThroughputBound,
    string Metadata,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded);

/// <summary>The hints a job gave.</summary>
public sealed record JobHintsResponse(int? Functions, double? PeakThroughputBitsPerSecond, long? CapacityBytes, bool LatencySensitive);

/// <summary>
/// What a job stores and how busy it is, from the metadata server. BytesByTier: the job's block bytes per tier
/// ("dram", "ssd", "hdd"); more than one tier when its own was full and data spilled.
/// </summary>
public sealed record JobUsageResponse(long Objects, long BlockBytes, long InlineBytes, long Requests, IReadOnlyDictionary<string, long>? BytesByTier = null)
{
    /// <summary>Bytes stored (blocks and inline) integrated over time on the telemetry tick, GB-seconds (1 GB = 10^9 bytes).</summary>
    public double GbSeconds { get; init; }

    /// <summary>The blocks' GB-seconds per tier ("dram", "ssd", "hdd").</summary>
    public IReadOnlyDictionary<string, double> GbSecondsByTier { get; init; } = new Dictionary<string, double>();

    /// <summary>When metering began (the first telemetry tick after registration); null before it.</summary>
    public DateTimeOffset? MeteredSince { get; init; }
}

/// <summary>A job as <c>GET /v1/jobs</c> shows it (never with its token).</summary>
public sealed record JobResponse(
    string JobId,
    string Name,
    string Tier,
    IReadOnlyList<JobNodeResponse> Nodes,
    bool ThroughputBound,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LeaseExpiresAt,
    JobHintsResponse Hints,
    JobUsageResponse? Usage);

/// <summary>Answer to <c>DELETE /v1/jobs/{id}</c>.</summary>
public sealed record DeleteJobResponse(string JobId, long ObjectsFreed, long BytesFreed);

/// <summary>Bytes of a node: what it offers and what is stored.</summary>
public sealed record NodeCapacityResponse(long Total, long Used);

/// <summary>Network traffic of a node over the last second.</summary>
public sealed record NodeNetworkResponse(double RxBytesPerSecond, double TxBytesPerSecond);

/// <summary>What jobs hold of a node: the larger of its bandwidth and capacity shares, and both amounts.</summary>
public sealed record NodeAllocationResponse(double Share, double BitsPerSecond, long Bytes);

/// <summary>A storage node in <c>GET /v1/cluster</c>.</summary>
public sealed record NodeResponse(
    uint Id,
    string Address,
    string Tier,
    string State,
    NodeCapacityResponse Capacity,
    double Cpu,
    NodeNetworkResponse Network,
    NodeAllocationResponse Allocated);

/// <summary>Answer to <c>GET /v1/cluster</c>.</summary>
public sealed record ClusterResponse(string Metadata, IReadOnlyList<NodeResponse> Nodes, IReadOnlyList<JobResponse> Jobs);

/// <summary>Answer to <c>GET /healthz</c>.</summary>
public sealed record HealthResponse(string Status, int? Nodes, string? Error);

/// <summary>Every failed request: what went wrong and, for bad input, which field.</summary>
public sealed record ErrorResponse(string Error, string? Field);

/// <summary>One sample of a node in <c>GET /v1/cluster/history</c>.</summary>
public sealed record NodeSampleResponse(DateTimeOffset Time, string State, long Capacity, long Used, double Cpu, double RxBytesPerSecond, double TxBytesPerSecond, long MovedBytes);

/// <summary>A node's recent samples, oldest first.</summary>
public sealed record NodeHistoryResponse(uint Id, string Tier, IReadOnlyList<NodeSampleResponse> Samples);

/// <summary>Answer of <c>GET /v1/cluster/history</c>.</summary>
public sealed record HistoryResponse(double IntervalSeconds, IReadOnlyList<NodeHistoryResponse> Nodes);

/// <summary>One entry of <c>GET /v1/events</c>.</summary>
public sealed record EventResponse(DateTimeOffset Time, string Kind, uint? Node, string Reason);
