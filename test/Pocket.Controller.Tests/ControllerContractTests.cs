using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>
/// The wire format of the controller's contract records (shared by the controller and <see cref="PocketControllerClient"/>):
/// each serializes to the exact JSON below, as the controller writes it, and reads back to the same JSON.
/// </summary>
public sealed class ControllerContractTests
{
    // As ControllerServer configures ASP.NET Core's JSON.
    private static readonly JsonSerializerOptions Wire = new(JsonSerializerDefaults.Web) { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    private static readonly DateTimeOffset Time = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);

    private static readonly JobToken Token = JobToken.TryParse("00112233445566778899aabbccddeeff", out var token) ? token : default;

    private static readonly JobNodeResponse Node = new(3, "10.0.0.7:7100", 0.5);

    private static readonly JobResponse Job = new(
        "sort-1", "sort", NodeTier.Dram, [Node], true, 2e9, 1024, 2, Time, Time.AddMinutes(5),
        new JobHints { Functions = 8, PeakThroughputBitsPerSecond = 1e9, CapacityBytes = 2048, LatencySensitive = false },
        new JobUsageResponse(4, 4096, 10, 99, new Dictionary<NodeTier, long> { [NodeTier.Dram] = 4096 })
        {
            GbSeconds = 1.5,
            GbSecondsByTier = new Dictionary<NodeTier, double> { [NodeTier.Dram] = 1.5 },
            MeteredSince = Time,
            KeyBytes = 12,
        })
    {
        Quota = new JobQuota(5000, 100, 2560),
    };

    private static readonly NodeResponse ClusterNode = new(
        3, "10.0.0.7:7100", NodeTier.Ssd, NodeState.Live, new NodeCapacityResponse(100, 40), 0.25, new NodeNetworkResponse(1.5, 2.5), new NodeAllocationResponse(0.75, 1e9, 64));

    public static TheoryData<object, string> Records => new()
    {
        { new RegisterJobRequest("sort", 8, JsonSerializer.SerializeToElement("2Gbps"), JsonSerializer.SerializeToElement(1024L), false), """{"name":"sort","functions":8,"peakThroughput":"2Gbps","capacity":1024,"latencySensitive":false}""" },
        { new RegisterJobRequest("sort", null, null, null, null), """{"name":"sort"}""" },
        {
            new RegisterJobRequest("sort", null, null, null, null) { MaxCapacity = JsonSerializer.SerializeToElement("512MB"), MaxObjects = 10, MaxKeyBytes = JsonSerializer.SerializeToElement(0L) },
            """{"name":"sort","maxCapacity":"512MB","maxObjects":10,"maxKeyBytes":0}"""
        },
        {
            new RegisterJobResponse("sort-2", Token, NodeTier.Dram, [], 300, false, "m:1", 0, 0, 2) { Quota = new JobQuota(1, 2, 3) },
            """{"jobId":"sort-2","token":"00112233445566778899aabbccddeeff","tier":"dram","nodes":[],"leaseSeconds":300,"throughputBound":false,"metadata":"m:1","throughputBitsPerSecond":0,"capacityBytes":0,"nodesNeeded":2,"quota":{"maxBytes":1,"maxObjects":2,"maxKeyBytes":3}}"""
        },
        { Node, """{"id":3,"address":"10.0.0.7:7100","weight":0.5}""" },
        {
            new RegisterJobResponse("sort-1", Token, NodeTier.Dram, [Node], 300, false, "10.0.0.1:7070", 2.4e9, 1024, 2),
            """{"jobId":"sort-1","token":"00112233445566778899aabbccddeeff","tier":"dram","nodes":[{"id":3,"address":"10.0.0.7:7100","weight":0.5}],"leaseSeconds":300,"throughputBound":false,"metadata":"10.0.0.1:7070","throughputBitsPerSecond":2400000000,"capacityBytes":1024,"nodesNeeded":2}"""
        },
        {
            Job,
            """{"jobId":"sort-1","name":"sort","tier":"dram","nodes":[{"id":3,"address":"10.0.0.7:7100","weight":0.5}],"throughputBound":true,"throughputBitsPerSecond":2000000000,"capacityBytes":1024,"nodesNeeded":2,"registeredAt":"2026-01-02T03:04:05+00:00","leaseExpiresAt":"2026-01-02T03:09:05+00:00","hints":{"functions":8,"peakThroughputBitsPerSecond":1000000000,"capacityBytes":2048,"latencySensitive":false},"usage":{"objects":4,"blockBytes":4096,"inlineBytes":10,"requests":99,"bytesByTier":{"dram":4096},"gbSeconds":1.5,"gbSecondsByTier":{"dram":1.5},"keyBytes":12,"meteredSince":"2026-01-02T03:04:05+00:00"},"quota":{"maxBytes":5000,"maxObjects":100,"maxKeyBytes":2560}}"""
        },
        { new DeleteJobResponse("sort-1", 4, 4106), """{"jobId":"sort-1","objectsFreed":4,"bytesFreed":4106}""" },
        {
            new ClusterResponse("10.0.0.1:7070", [ClusterNode], []),
            """{"metadata":"10.0.0.1:7070","nodes":[{"id":3,"address":"10.0.0.7:7100","tier":"ssd","state":"live","capacity":{"total":100,"used":40},"cpu":0.25,"network":{"rxBytesPerSecond":1.5,"txBytesPerSecond":2.5},"allocated":{"share":0.75,"bitsPerSecond":1000000000,"bytes":64}}],"jobs":[]}"""
        },
        { new HealthResponse("ok", 2, null), """{"status":"ok","nodes":2}""" },
        { new HealthResponse("unavailable", null, "metadata server down"), """{"status":"unavailable","error":"metadata server down"}""" },
        { new ErrorResponse("capacity: bad", "capacity"), """{"error":"capacity: bad","field":"capacity"}""" },
        {
            new HistoryResponse(1, [new NodeHistoryResponse(3, NodeTier.Dram, [new NodeSampleResponse(Time, NodeState.Live, 100, 40, 0.25, 1.5, 2.5, 0)])]),
            """{"intervalSeconds":1,"nodes":[{"id":3,"tier":"dram","samples":[{"time":"2026-01-02T03:04:05+00:00","state":"live","capacity":100,"used":40,"cpu":0.25,"rxBytesPerSecond":1.5,"txBytesPerSecond":2.5,"movedBytes":0}]}]}"""
        },
        { new EventResponse(Time, "scale-up", 3, "full"), """{"time":"2026-01-02T03:04:05+00:00","kind":"scale-up","node":3,"reason":"full"}""" },
        { new EventResponse(Time, "scale-failed", null, "no room"), """{"time":"2026-01-02T03:04:05+00:00","kind":"scale-failed","reason":"no room"}""" },
    };

    [Theory]
    [MemberData(nameof(Records))]
    public void EachRecordHasItsWireFormatAndReadsBack(object record, string json)
    {
        var type = record.GetType();
        Assert.Equal(json, JsonSerializer.Serialize(record, type, Wire));
        var read = JsonSerializer.Deserialize(json, type, Wire);
        Assert.NotNull(read);
        Assert.Equal(json, JsonSerializer.Serialize(read, type, Wire));
    }

    [Theory]
    [InlineData(typeof(NodeResponse), """{"id":3,"address":"a:1","tier":"tape","state":"live","capacity":{"total":1,"used":0},"cpu":0,"network":{"rxBytesPerSecond":0,"txBytesPerSecond":0},"allocated":{"share":0,"bitsPerSecond":0,"bytes":0}}""")]
    [InlineData(typeof(NodeResponse), """{"id":3,"address":"a:1","tier":"dram","state":"asleep","capacity":{"total":1,"used":0},"cpu":0,"network":{"rxBytesPerSecond":0,"txBytesPerSecond":0},"allocated":{"share":0,"bitsPerSecond":0,"bytes":0}}""")]
    [InlineData(typeof(NodeResponse), """{"id":3,"address":"a:1","tier":"dram","state":"1","capacity":{"total":1,"used":0},"cpu":0,"network":{"rxBytesPerSecond":0,"txBytesPerSecond":0},"allocated":{"share":0,"bitsPerSecond":0,"bytes":0}}""")]
    [InlineData(typeof(RegisterJobResponse), """{"jobId":"sort-1","token":"not-hex","tier":"dram","nodes":[],"leaseSeconds":300,"throughputBound":false,"metadata":"m:1","throughputBitsPerSecond":0,"capacityBytes":0,"nodesNeeded":1}""")]
    [InlineData(typeof(JobUsageResponse), """{"objects":1,"blockBytes":1,"inlineBytes":0,"requests":1,"bytesByTier":{"tape":1}}""")]
    public void UnknownTiersStatesAndMalformedTokensAreRefused(Type type, string json) =>
        Assert.ThrowsAny<JsonException>(() => JsonSerializer.Deserialize(json, type, Wire));

    [Fact]
    public async Task TheControllerAndTheClientUseTheSameRecords()
    {
        // The controller's answers are the contract types themselves, so a job read through the client equals one
        // read as raw JSON.
        await using var h = await ControllerHarness.StartAsync();
        using var client = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);
        var registration = await client.RegisterJobAsync("contract", new JobHints { Functions = 3, CapacityBytes = 64L << 20 });
        var raw = await h.Http.GetStringAsync($"/v1/jobs/{registration.JobId}");
        var record = JsonSerializer.Deserialize<JobResponse>(raw, Wire)!;
        var job = (await client.GetJobAsync(registration.JobId))!;
        Assert.Equal(record.JobId, job.JobId);
        Assert.Equal(record.Hints.Functions, job.Hints.Functions);
        Assert.Equal(record.Hints.CapacityBytes, job.Hints.CapacityBytes);
        Assert.Equal(record.Nodes.Select(n => (n.Id, n.Weight)), job.Nodes.Select(n => (n.Id, n.Weight)));
        Assert.Equal(raw, JsonSerializer.Serialize(record, Wire));
    }
}
