using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Api;

/// <summary>The HTTP API: thin handlers that turn JSON into registry calls and exceptions into status codes.</summary>
internal sealed class ControllerEndpoints(JobRegistry registry, MetadataPlane plane, ControllerOptions options, ILogger logger)
{
    public required ClusterTelemetry Telemetry { get; init; }

    public required ClusterEventLog Events { get; init; }

    public required JobUsageMeter Meter { get; init; }

    /// <summary>The host's budget for new nodes when nodes run as local processes; null otherwise.</summary>
    public Func<HostBudgetResponse?>? HostBudget { get; init; }

    /// <summary>The metadata servers the watch finds down (<see cref="MetadataWatch.Outages"/>), for <c>/healthz</c>.</summary>
    public Func<IReadOnlyList<MetadataOutage>>? MetadataOutages { get; init; }

    public void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/jobs", RegisterAsync)
            .WithName("RegisterJob")
            .WithTags("jobs")
            .WithSummary("Registers a job; sizes it from its hints, starts nodes if needed and returns its token and node weights.")
            .Accepts<RegisterJobRequest>("application/json")
            .Produces<RegisterJobResponse>(StatusCodes.Status201Created)
            .Produces<ErrorResponse>(StatusCodes.Status400BadRequest)
            .Produces<ErrorResponse>(StatusCodes.Status422UnprocessableEntity)
            .Produces<ErrorResponse>(StatusCodes.Status503ServiceUnavailable);
        app.MapGet("/v1/jobs", ListJobsAsync)
            .WithName("ListJobs")
            .WithTags("jobs")
            .WithSummary("Every job the controller registered (without tokens).")
            .Produces<JobResponse[]>();
        app.MapGet("/v1/jobs/{id}", GetJobAsync)
            .WithName("GetJob")
            .WithTags("jobs")
            .WithSummary("One job, with its usage from the metadata server.")
            .Produces<JobResponse>()
            .Produces<ErrorResponse>(StatusCodes.Status404NotFound);
        app.MapGet("/v1/jobs/{id}/credentials", GetCredentials)
            .WithName("GetJobCredentials")
            .WithTags("jobs")
            .WithSummary("A job's token and metadata server, by id (or by name when one job has it): what the S3 gateway and the CLI open a job registered elsewhere with.")
            .Produces<JobCredentialsResponse>()
            .Produces<ErrorResponse>(StatusCodes.Status404NotFound)
            .Produces<ErrorResponse>(StatusCodes.Status409Conflict);
        app.MapDelete("/v1/jobs/{id}", DeleteJobAsync)
            .WithName("DeregisterJob")
            .WithTags("jobs")
            .WithSummary("Deregisters a job: every byte it stored is freed at once and its node shares are returned.")
            .Produces<DeleteJobResponse>()
            .Produces<ErrorResponse>(StatusCodes.Status404NotFound);
        app.MapGet("/v1/cluster", GetClusterAsync)
            .WithName("GetCluster")
            .WithTags("cluster")
            .WithSummary("Storage nodes (tier, state, capacity, CPU, network, allocation) and jobs with their usage as of the last telemetry tick.")
            .Produces<ClusterResponse>();
        app.MapGet("/v1/cluster/history", GetHistory)
            .WithName("GetClusterHistory")
            .WithTags("cluster")
            .WithSummary("The last samples (one per second) of every node: state, capacity used, CPU, network. ?samples=N (default 60).")
            .Produces<HistoryResponse>();
        app.MapGet("/v1/events", GetEvents)
            .WithName("GetEvents")
            .WithTags("cluster")
            .WithSummary("Scaling decisions with their reasons and node deaths, oldest first. ?limit=N (default 100).")
            .Produces<EventResponse[]>();
        app.MapGet("/healthz", HealthAsync)
            .WithName("Health")
            .WithTags("cluster")
            .WithSummary("200 \"ok\" when every metadata server answers; 200 \"degraded\" naming each one down (since when, lost or being replaced) while others answer; 503 when none answers.")
            .Produces<HealthResponse>()
            .Produces<HealthResponse>(StatusCodes.Status503ServiceUnavailable);
    }

    private async Task<IResult> RegisterAsync(HttpContext context, CancellationToken cancellationToken)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (JsonException ex)
        {
            return BadRequest(RegisterJobParser.Fail("body", $"is not valid JSON ({ex.Message})"));
        }
        catch (BadHttpRequestException ex)
        {
            return BadRequest(RegisterJobParser.Fail("body", ex.Message));
        }

        string name;
        JobHints hints;
        using (document)
        {
            if (!RegisterJobParser.TryParse(document.RootElement, out name, out hints, out var error))
            {
                return BadRequest(error!);
            }
        }

        JobRecord job;
        try
        {
            job = await registry.RegisterAsync(name, hints, cancellationToken).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            var field = ex.ParamName ?? "body";
            return BadRequest(RegisterJobParser.Fail(field, StripParamName(ex)));
        }
        catch (SizingException ex)
        {
            return Error(context, StatusCodes.Status422UnprocessableEntity, ex.Message);
        }
        catch (ProvisioningException ex)
        {
            return Error(context, StatusCodes.Status503ServiceUnavailable, ex.Message);
        }
        catch (PocketException ex)
        {
            return Error(context, StatusCodes.Status502BadGateway, $"metadata server: {ex.Message}");
        }

        var addresses = await AddressesAsync(cancellationToken).ConfigureAwait(false);
        var body = new RegisterJobResponse(
            job.Id,
            job.Token,
            job.Requirement.Tier,
            Nodes(job, addresses),
            job.Lease.TotalSeconds,
            job.Requirement.ThroughputBound,
            job.MetadataAddress ?? plane.Primary.MetadataAddress,
            job.Requirement.ThroughputBitsPerSecond,
            job.Requirement.CapacityBytes,
            job.Requirement.NodesNeeded)
        {
            Quota = job.Quota,
        };
        return Results.Json(body, statusCode: StatusCodes.Status201Created, contentType: null);
    }

    private async Task<IResult> ListJobsAsync(CancellationToken cancellationToken)
    {
        var addresses = await AddressesAsync(cancellationToken).ConfigureAwait(false);
        return Results.Json(registry.Jobs.Select(j => ToResponse(j, addresses, usage: null)).ToList());
    }

    private async Task<IResult> GetJobAsync(string id, HttpContext context, CancellationToken cancellationToken)
    {
        if (registry.Find(id) is not { } job)
        {
            return NotFound(id);
        }

        JobUsage? usage = null;
        try
        {
            usage = await registry.AdminOf(job).GetJobUsageAsync(id, cancellationToken).ConfigureAwait(false);
        }
        catch (PocketException ex)
        {
            // The job is still the controller's; only its usage is unknown for now.
            ControllerLog.RequestFailed(logger, context.Request.Method, context.Request.Path, ex.Message);
        }

        var addresses = await AddressesAsync(cancellationToken).ConfigureAwait(false);
        return Results.Json(ToResponse(job, addresses, usage, Meter.Read(id)));
    }

    // The API is the cluster's admin surface (ControllerAuthentication): whoever holds the cluster token may open any
    // job anyway, so handing out a job's token here gives nothing away; it is logged, as every hand-out of a secret is.
    private IResult GetCredentials(string id, HttpContext context)
    {
        var job = registry.Find(id);
        if (job is null)
        {
            var named = registry.Jobs.Where(j => j.Name == id).ToList();
            if (named.Count > 1)
            {
                return Results.Json(
                    new ErrorResponse($"{named.Count} jobs are named '{id}' ({string.Join(", ", named.Select(j => j.Id))}): ask for one by its id", "id"),
                    statusCode: StatusCodes.Status409Conflict);
            }

            job = named.FirstOrDefault();
        }

        if (job is null)
        {
            return NotFound(id);
        }

        ControllerLog.CredentialsHandedOut(logger, job.Id, context.Connection.RemoteIpAddress?.ToString() ?? "?");
        return Results.Json(new JobCredentialsResponse(job.Id, job.Name, job.Token, job.MetadataAddress ?? plane.Primary.MetadataAddress));
    }

    private async Task<IResult> DeleteJobAsync(string id, HttpContext context, CancellationToken cancellationToken)
    {
        EndedJob? ended;
        try
        {
            ended = await registry.DeregisterAsync(id, cancellationToken).ConfigureAwait(false);
        }
        catch (PocketException ex)
        {
            return Error(context, StatusCodes.Status502BadGateway, $"metadata server: {ex.Message}");
        }

        return ended is null
            ? NotFound(id)
            : Results.Json(new DeleteJobResponse(id, ended.ObjectsFreed, ended.BytesFreed));
    }

    private async Task<IResult> GetClusterAsync(HttpContext context, CancellationToken cancellationToken)
    {
        IReadOnlyList<NodeInfo> nodes;
        try
        {
            nodes = await plane.GetNodesAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PocketException ex)
        {
            return Error(context, StatusCodes.Status502BadGateway, $"metadata server: {ex.Message}");
        }

        var allocations = registry.Allocations;
        var nodeResponses = nodes.Select(n =>
        {
            var held = allocations.GetValueOrDefault(n.Id);
            var share = registry.Sizer.ShareOf(new NodeLoad(n.Id, n.Tier, n.Capacity, held.BitsPerSecond, held.Bytes));
            return new NodeResponse(
                n.Id,
                n.Address,
                n.Tier,
                n.State,
                new NodeCapacityResponse(n.Capacity, n.Used),
                n.Cpu,
                new NodeNetworkResponse(n.NetRxBytesPerSecond, n.NetTxBytesPerSecond),
                new NodeAllocationResponse(share, held.BitsPerSecond, (long)Math.Round(held.Bytes)));
        }).ToList();
        var addresses = nodes.ToDictionary(n => n.Id, n => n.Address);
        // Each job's usage as of the last telemetry tick (one metadata round trip per job per tick, not per request).
        var jobs = registry.Jobs.Select(j => Meter.Read(j.Id) is { } reading ? ToResponse(j, addresses, reading.Usage, reading) : ToResponse(j, addresses, usage: null)).ToList();
        return Results.Json(new ClusterResponse(plane.Primary.MetadataAddress, nodeResponses, jobs, HostBudget?.Invoke()) { MetadataServers = MetadataServers() });
    }

    /// <summary>Each server's jobs and request rate (the meter's last tick) and whether it answered the last node poll.</summary>
    private List<MetadataServerResponse> MetadataServers()
    {
        var unreachable = Telemetry.Unreachable.ToDictionary(f => f.Address, f => f.Error, StringComparer.Ordinal);
        var load = Meter.Servers.ToDictionary(s => s.Address, StringComparer.Ordinal);
        var jobs = registry.Jobs.GroupBy(j => registry.AdminOf(j).MetadataAddress).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return [.. plane.Servers.Select(server => server.MetadataAddress).Select(address => new MetadataServerResponse(
            address,
            !unreachable.ContainsKey(address),
            jobs.GetValueOrDefault(address),
            load.TryGetValue(address, out var l) ? l.RequestsPerSecond : 0,
            unreachable.GetValueOrDefault(address))
        {
            Cpu = plane.UsageOf(address)?.Cpu,
            HostCpu = plane.UsageOf(address)?.HostCpu,
            ServerRequestsPerSecond = plane.UsageOf(address)?.RequestsPerSecond,
            State = !plane.IsUp(plane.For(address)) ? "lost" : plane.StateOf(address).ToString().ToLowerInvariant(),
        })];
    }

    private IResult GetHistory(int? samples)
    {
        var limit = Math.Clamp(samples ?? 60, 1, options.HistoryLength);
        var nodes = Telemetry.History(limit)
            .OrderBy(h => h.Key)
            .Select(h => new NodeHistoryResponse(
                h.Key,
                h.Value[^1].Tier,
                [.. h.Value.Select(s => new NodeSampleResponse(s.Time, s.State, s.Capacity, s.Used, s.Cpu, s.NetRxBytesPerSecond, s.NetTxBytesPerSecond, s.MovedBytes))]))
            .ToList();
        return Results.Ok(new HistoryResponse(Telemetry.Interval.TotalSeconds, nodes));
    }

    private IResult GetEvents(int? limit) =>
        Results.Ok(Events.Last(Math.Clamp(limit ?? 100, 1, options.EventLogLength)).Select(e => new EventResponse(e.Time, e.Kind, e.NodeId, e.Reason)).ToArray());

    private async Task<IResult> HealthAsync(CancellationToken cancellationToken)
    {
        PlaneNodes read;
        try
        {
            read = await plane.ReadNodesAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PocketException ex)
        {
            return Results.Json(new HealthResponse("unavailable", null, $"metadata server {options.MetadataAddress}: {ex.Message}"), statusCode: StatusCodes.Status503ServiceUnavailable);
        }

        // Down: what the watch knows (failing probes, lost, being replaced: with since when) and what this read found
        // (a server that died since the last probe).
        var known = MetadataOutages?.Invoke() ?? [];
        var now = options.Registry.TimeProvider.GetUtcNow();
        var down = known
            .Select(o => new MetadataServerDownResponse(o.Address, o.Since, o.State, o.Error))
            .Concat(read.Failures
                .Where(f => !known.Any(o => string.Equals(o.Address, f.Address, StringComparison.OrdinalIgnoreCase)))
                .Select(f => new MetadataServerDownResponse(f.Address, now, MetadataOutage.NotAnswering, f.Error)))
            .ToList();
        var live = read.Nodes.Count(n => n.State == NodeState.Live);
        if (down.Count == 0)
        {
            return Results.Json(new HealthResponse("ok", live, null));
        }

        // Still 200: the controller serves on the servers that answer, and a readiness probe that failed here would take
        // the only controller out of its Service for an outage it is already replacing.
        var error = string.Join("; ", down.Select(d => string.Create(CultureInfo.InvariantCulture, $"metadata server {d.Address} {d.State} since {d.Since:O}{(d.Error is null ? string.Empty : $" ({d.Error})")}")));
        return Results.Json(new HealthResponse("degraded", live, error) { MetadataDown = down });
    }

    private async Task<IReadOnlyDictionary<uint, string>> AddressesAsync(CancellationToken cancellationToken)
    {
        try
        {
            var nodes = await plane.GetNodesAsync(cancellationToken).ConfigureAwait(false);
            return nodes.ToDictionary(n => n.Id, n => n.Address);
        }
        catch (PocketException)
        {
            // Addresses are a convenience for callers; the job itself is known without them.
            return new Dictionary<uint, string>();
        }
    }

    private static List<JobNodeResponse> Nodes(JobRecord job, IReadOnlyDictionary<uint, string> addresses) =>
        [.. job.Weights.Weights
            .OrderBy(w => w.Key)
            .Select(w => new JobNodeResponse(w.Key, addresses.GetValueOrDefault(w.Key, string.Empty), w.Value))];

    private static JobResponse ToResponse(JobRecord job, IReadOnlyDictionary<uint, string> addresses, JobUsage? usage, JobMeterReading? meter = null) => new(
        job.Id,
        job.Name,
        job.Requirement.Tier,
        Nodes(job, addresses),
        job.Requirement.ThroughputBound,
        job.Requirement.ThroughputBitsPerSecond,
        job.Requirement.CapacityBytes,
        job.Requirement.NodesNeeded,
        job.RegisteredAt,
        job.LeaseExpiresAt,
        job.Hints,
        usage is null ? null : new JobUsageResponse(usage.Objects, usage.BlockBytes, usage.InlineBytes, usage.Requests, usage.BytesByTier)
        {
            GbSeconds = meter?.GbSeconds ?? 0,
            GbSecondsByTier = meter?.GbSecondsByTier ?? new Dictionary<NodeTier, double>(),
            MeteredSince = meter?.Since,
            KeyBytes = usage.KeyBytes,
        })
    {
        Quota = job.Quota,
    };

    private static IResult BadRequest(ErrorResponse error) => Results.Json(error, statusCode: StatusCodes.Status400BadRequest);

    // Still 404 (clients treat a job that is gone as gone), but a job that ended lately says when and why.
    private IResult NotFound(string id) =>
        Results.Json(new ErrorResponse(registry.FindEnded(id)?.Describe() ?? $"no job '{id}'", "id"), statusCode: StatusCodes.Status404NotFound);

    private IResult Error(HttpContext context, int status, string message)
    {
        ControllerLog.RequestFailed(logger, context.Request.Method, context.Request.Path, message);
        return Results.Json(new ErrorResponse(message, null), statusCode: status);
    }

    // ArgumentException appends " (Parameter 'x')" to its message; the field is reported separately.
    private static string StripParamName(ArgumentException ex)
    {
        var message = ex.Message;
        var suffix = $" (Parameter '{ex.ParamName}')";
        return message.EndsWith(suffix, StringComparison.Ordinal) ? message[..^suffix.Length] : message;
    }
}
