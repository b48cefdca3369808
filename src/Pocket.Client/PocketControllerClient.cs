using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Protocol;

namespace Pocket.Client;

/// <summary>
/// What a job tells the controller about itself when it registers, so that it gets the right tier and number of
/// nodes. Every hint is optional; none at all gets the controller's default allocation.
/// </summary>
public sealed record JobSizeHints
{
    /// <summary>Functions (lambdas, workers) of the job running at the same time.</summary>
    public int? Functions { get; init; }

    /// <summary>Peak throughput of the whole job, bits per second (wins over <see cref="Functions"/>).</summary>
    public double? PeakThroughputBitsPerSecond { get; init; }

    /// <summary>Most bytes the job stores at once.</summary>
    public long? CapacityBytes { get; init; }

    /// <summary>Whether the job waits on every small request (then it gets DRAM). Default true, as in the paper.</summary>
    public bool LatencySensitive { get; init; } = true;
}

/// <summary>A storage node a job was given and the share of the job's new blocks it receives.</summary>
/// <param name="Id">Node id on the metadata server.</param>
/// <param name="Address">host:port the node serves on (empty when the controller could not tell).</param>
/// <param name="Weight">Fraction of the job's new blocks placed on this node; a job's weights sum to 1.</param>
public sealed record JobNodeWeight(uint Id, string Address, double Weight);

/// <summary>
/// The answer to a registration: the job's id and secret token, its tier and nodes, and the metadata server its data
/// goes through. Open it with <see cref="PocketClient.OpenJob(JobRegistration)"/>.
/// </summary>
/// <param name="JobId">Job id, e.g. "sort-3".</param>
/// <param name="Token">The job's secret: every data request carries it. Only the registration shows it.</param>
/// <param name="Tier">The tier the controller chose.</param>
/// <param name="Nodes">The job's nodes and weights.</param>
/// <param name="Metadata">The metadata server, host:port, for the data path.</param>
/// <param name="Lease">A job that makes no request for this long is reclaimed as if deregistered.</param>
/// <param name="ThroughputBound">True when throughput decided the number of nodes, false when capacity did.</param>
/// <param name="ThroughputBitsPerSecond">Throughput the job was sized for.</param>
/// <param name="CapacityBytes">Capacity the job was sized for.</param>
/// <param name="NodesNeeded">Whole nodes of the tier's class the job needs.</param>
public sealed record JobRegistration(
    string JobId,
    JobToken Token,
    NodeTier Tier,
    IReadOnlyList<JobNodeWeight> Nodes,
    string Metadata,
    TimeSpan Lease,
    bool ThroughputBound,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded)
{
    /// <summary>The id only: a record's generated text would print the token into logs.</summary>
    public override string ToString() => $"job {JobId}";
}

/// <summary>A job as the controller lists it (never with its token).</summary>
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
/// <param name="Usage">What it stores: read now for one job (<see cref="PocketControllerClient.GetJobAsync"/>), as of the last telemetry tick in <see cref="PocketControllerClient.GetClusterAsync"/> (null before its first tick).</param>
public sealed record ControllerJob(
    string JobId,
    string Name,
    NodeTier Tier,
    IReadOnlyList<JobNodeWeight> Nodes,
    bool ThroughputBound,
    double ThroughputBitsPerSecond,
    long CapacityBytes,
    int NodesNeeded,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LeaseExpiresAt,
    JobSizeHints Hints,
    JobUsage? Usage)
{
    /// <summary>What the job used so far (GB-seconds), when the controller was asked for one job; null otherwise.</summary>
    public JobMetering? Metering { get; init; }
}

/// <summary>What a job used so far, metered by the controller on its telemetry tick.</summary>
/// <param name="Requests">Requests the metadata server counted for the job.</param>
/// <param name="GbSeconds">Bytes stored (blocks and inline) times seconds held, in GB-seconds (1 GB = 10^9 bytes).</param>
/// <param name="GbSecondsByTier">The blocks' GB-seconds per tier.</param>
/// <param name="Since">When metering began (null before the job's first tick).</param>
public sealed record JobMetering(long Requests, double GbSeconds, IReadOnlyDictionary<NodeTier, double> GbSecondsByTier, DateTimeOffset? Since);

/// <summary>Something the controller decided or noticed.</summary>
/// <param name="Time">When.</param>
/// <param name="Kind">scale-up, node-started, scale-down, node-drained, node-stopped, scale-failed, node-dead, node-removed, pool-added, pool-claimed, pool-failed.</param>
/// <param name="Node">The node concerned, when there is one.</param>
/// <param name="Reason">Why, in words.</param>
public sealed record ClusterEventInfo(DateTimeOffset Time, string Kind, uint? Node, string Reason);

/// <summary>What deregistering a job freed.</summary>
/// <param name="JobId">The job.</param>
/// <param name="ObjectsFreed">Objects deleted.</param>
/// <param name="BytesFreed">Bytes freed.</param>
public sealed record JobDeregistration(string JobId, long ObjectsFreed, long BytesFreed);

/// <summary>A storage node as the controller reports it.</summary>
/// <param name="Id">Node id.</param>
/// <param name="Address">host:port.</param>
/// <param name="Tier">Its tier.</param>
/// <param name="State">Live, draining or dead.</param>
/// <param name="CapacityBytes">Bytes it offers.</param>
/// <param name="UsedBytes">Bytes stored on it.</param>
/// <param name="Cpu">CPU use over the last second, as a fraction of all the host's cores (0 to 1).</param>
/// <param name="NetRxBytesPerSecond">Bytes received per second over the last second.</param>
/// <param name="NetTxBytesPerSecond">Bytes sent per second over the last second.</param>
/// <param name="AllocatedShare">Fraction of the node promised to jobs (the larger of bandwidth and capacity share).</param>
/// <param name="AllocatedBitsPerSecond">Bandwidth promised to jobs.</param>
/// <param name="AllocatedBytes">Capacity promised to jobs.</param>
public sealed record ClusterNodeStatus(
    uint Id,
    string Address,
    NodeTier Tier,
    NodeState State,
    long CapacityBytes,
    long UsedBytes,
    double Cpu,
    double NetRxBytesPerSecond,
    double NetTxBytesPerSecond,
    double AllocatedShare,
    double AllocatedBitsPerSecond,
    long AllocatedBytes);

/// <summary>The whole cluster as the controller sees it.</summary>
/// <param name="Metadata">The metadata server, host:port.</param>
/// <param name="Nodes">Every storage node the metadata server knows.</param>
/// <param name="Jobs">Every job the controller registered (without usage).</param>
public sealed record ClusterStatus(string Metadata, IReadOnlyList<ClusterNodeStatus> Nodes, IReadOnlyList<ControllerJob> Jobs);

/// <summary>The controller's health: whether it reaches its metadata server, and how many nodes are live.</summary>
/// <param name="Healthy">True when the metadata server answers.</param>
/// <param name="LiveNodes">Live storage nodes, when healthy.</param>
/// <param name="Error">Why not, when not healthy.</param>
public sealed record ControllerHealth(bool Healthy, int? LiveNodes, string? Error);

/// <summary>
/// The controller refused a request or could not be reached. <see cref="Exception.Message"/> is the controller's own
/// explanation; <see cref="Field"/> names the bad input for a 400.
/// </summary>
public sealed class PocketControllerException : PocketException
{
    /// <summary>Creates the exception for a refused request (or, with no HTTP status, an unreachable controller).</summary>
    public PocketControllerException(HttpStatusCode? httpStatus, string message, string? field = null, Exception? inner = null)
        : base(StatusOf(httpStatus), message, inner)
    {
        HttpStatus = httpStatus;
        Field = field;
    }

    /// <summary>The HTTP status the controller answered with; null when it did not answer at all.</summary>
    public HttpStatusCode? HttpStatus { get; }

    /// <summary>The request field that was wrong, for bad input.</summary>
    public string? Field { get; }

    private static Status StatusOf(HttpStatusCode? status) => status switch
    {
        HttpStatusCode.BadRequest or HttpStatusCode.UnprocessableEntity => Status.BadRequest,
        HttpStatusCode.NotFound => Status.NotFound,
        HttpStatusCode.Unauthorized => Status.Unauthorized,
        HttpStatusCode.ServiceUnavailable => Status.NoNodes,
        _ => Status.InternalError,
    };
}

/// <summary>Settings of a <see cref="PocketControllerClient"/>: cluster token, TLS trust and request timeout.</summary>
public sealed record PocketControllerClientOptions
{
    /// <summary>Sent as <c>Authorization: Bearer</c> on every request but the health check.</summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>
    /// How an https:// controller's certificate is checked; null: against the system's trusted roots. For a private CA
    /// or the self-signed certificate of <c>pocket up --tls</c>:
    /// <c>TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(path))</c> (Pocket.Networking).
    /// </summary>
    public System.Net.Security.RemoteCertificateValidationCallback? CertificateValidation { get; init; }

    /// <summary>How long one request may take (registration waits for started nodes); two minutes by default.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);
}

/// <summary>
/// Talks to a Pocket controller's HTTP/JSON API: registers jobs (the controller sizes them from their hints),
/// deregisters them, and reads the cluster's state. The controller is the one address a job needs: its answers carry
/// the metadata server's address (<see cref="JobRegistration.Metadata"/>, <see cref="PocketClient.ConnectViaControllerAsync"/>).
/// Thread-safe; make one per controller and share it.
/// </summary>
/// <example>
/// <code>
/// using var controller = new PocketControllerClient(new Uri("http://127.0.0.1:7080"), clusterToken);
/// var registration = await controller.RegisterJobAsync("sort", new JobSizeHints { Functions = 8, LatencySensitive = false });
/// await using var client = await PocketClient.ConnectAsync(registration.Metadata);
/// var job = client.OpenJob(registration);
/// await job.PutAsync("shuffle/0-1", data);
/// await controller.DeregisterAsync(registration.JobId);
/// </code>
/// </example>
public sealed class PocketControllerClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly AuthenticationHeaderValue? _authorization;

    /// <summary>
    /// A client for the controller at <paramref name="baseAddress"/> (e.g. http://127.0.0.1:7080). Every request but
    /// the health check carries <paramref name="clusterToken"/> as <c>Authorization: Bearer</c>; the controller refuses
    /// requests without it (401) unless its cluster has no token.
    /// </summary>
    public PocketControllerClient(Uri baseAddress, JobToken clusterToken = default)
        : this(new HttpClient { BaseAddress = WithTrailingSlash(baseAddress), Timeout = TimeSpan.FromMinutes(2) }, clusterToken, ownsHttp: true)
    {
    }

    /// <summary>
    /// A client for the controller at <paramref name="baseAddress"/> with <paramref name="options"/>: the cluster token,
    /// the request timeout, and for an https:// controller with a private or self-signed certificate, how to check it
    /// (<see cref="PocketControllerClientOptions.CertificateValidation"/>).
    /// </summary>
    public PocketControllerClient(Uri baseAddress, PocketControllerClientOptions options)
        : this(CreateHttp(baseAddress, options), options.ClusterToken, ownsHttp: true)
    {
    }

    /// <summary>
    /// A client that sends through <paramref name="httpClient"/>, whose <see cref="HttpClient.BaseAddress"/> must be the
    /// controller's URL, with <paramref name="clusterToken"/> on every request. The caller keeps ownership of it.
    /// </summary>
    public PocketControllerClient(HttpClient httpClient, JobToken clusterToken = default)
        : this(httpClient, clusterToken, ownsHttp: false)
    {
    }

    private PocketControllerClient(HttpClient http, JobToken clusterToken, bool ownsHttp)
    {
        ArgumentNullException.ThrowIfNull(http);
        if (http.BaseAddress is not { IsAbsoluteUri: true })
        {
            throw new ArgumentException("the HttpClient needs an absolute BaseAddress (the controller's URL)", nameof(http));
        }

        _http = http;
        _ownsHttp = ownsHttp;
        _authorization = clusterToken.IsNone ? null : new AuthenticationHeaderValue("Bearer", clusterToken.ToString());
        BaseAddress = http.BaseAddress;
    }

    /// <summary>The controller's URL.</summary>
    public Uri BaseAddress { get; }

    private static HttpClient CreateHttp(Uri baseAddress, PocketControllerClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(baseAddress);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Timeout <= TimeSpan.Zero && options.Timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException("the timeout must be positive (or infinite)", nameof(options));
        }

        var handler = new SocketsHttpHandler();
        if (options.CertificateValidation is { } validate)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = validate;
        }

        return new HttpClient(handler, disposeHandler: true) { BaseAddress = WithTrailingSlash(baseAddress), Timeout = options.Timeout };
    }

    // For messages: the URL as people type it.
    private string Where => BaseAddress.ToString().TrimEnd('/');

    /// <summary>
    /// Registers a job: the controller sizes it from <paramref name="hints"/>, starts storage nodes if the cluster lacks
    /// room (waiting for them), and answers with the job's token, tier, nodes and metadata server.
    /// </summary>
    /// <exception cref="PocketControllerException">
    /// Bad name or hint (400, <see cref="PocketControllerException.Field"/> says which), a missing or wrong cluster
    /// token (401), a job too large to size (422),
    /// nodes that could not be started in time (503), or an unreachable controller.
    /// </exception>
    public async Task<JobRegistration> RegisterJobAsync(string name, JobSizeHints? hints = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        hints ??= new JobSizeHints();
        var request = new RegisterJobRequest(
            name,
            hints.Functions,
            hints.PeakThroughputBitsPerSecond is { } throughput ? JsonSerializer.SerializeToElement(throughput, ControllerJsonContext.Default.Double) : null,
            hints.CapacityBytes is { } capacity ? JsonSerializer.SerializeToElement(capacity, ControllerJsonContext.Default.Int64) : null,
            hints.LatencySensitive);
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Post, "v1/jobs") { Content = JsonContent.Create(request, ControllerJsonContext.Default.RegisterJobRequest) },
            ControllerJsonContext.Default.RegisterJobResponse,
            cancellationToken).ConfigureAwait(false);
        if (!JobToken.TryParse(body.Token, out var token))
        {
            throw Unexpected("a job token that is not 32 hex digits");
        }

        return new JobRegistration(
            body.JobId ?? throw Unexpected("no job id"),
            token,
            ParseTier(body.Tier),
            Nodes(body.Nodes),
            body.Metadata ?? throw Unexpected("no metadata address"),
            TimeSpan.FromSeconds(body.LeaseSeconds),
            body.ThroughputBound,
            body.ThroughputBitsPerSecond,
            body.CapacityBytes,
            body.NodesNeeded);
    }

    /// <summary>Deregisters a job: every byte it stored is freed at once and its node shares return to the cluster.</summary>
    /// <exception cref="PocketControllerException">No such job (404), or the controller failed or could not be reached.</exception>
    public async Task<JobDeregistration> DeregisterAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Delete, $"v1/jobs/{Uri.EscapeDataString(jobId)}"),
            ControllerJsonContext.Default.DeleteJobResponse,
            cancellationToken).ConfigureAwait(false);
        return new JobDeregistration(body.JobId ?? jobId, body.ObjectsFreed, body.BytesFreed);
    }

    /// <summary>Every job the controller registered, oldest first.</summary>
    public async Task<IReadOnlyList<ControllerJob>> ListJobsAsync(CancellationToken cancellationToken = default)
    {
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, "v1/jobs"),
            ControllerJsonContext.Default.ListJobResponse,
            cancellationToken).ConfigureAwait(false);
        return [.. body.Select(ToJob)];
    }

    /// <summary>One job with its usage (objects, bytes, requests), or null when the controller has no such job.</summary>
    public async Task<ControllerJob?> GetJobAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        try
        {
            var body = await SendAsync(
                () => new HttpRequestMessage(HttpMethod.Get, $"v1/jobs/{Uri.EscapeDataString(jobId)}"),
                ControllerJsonContext.Default.JobResponse,
                cancellationToken).ConfigureAwait(false);
            return ToJob(body);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>The storage nodes (tier, state, capacity, CPU, network, allocation) and the jobs.</summary>
    public async Task<ClusterStatus> GetClusterAsync(CancellationToken cancellationToken = default)
    {
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, "v1/cluster"),
            ControllerJsonContext.Default.ClusterResponse,
            cancellationToken).ConfigureAwait(false);
        var nodes = (body.Nodes ?? []).Select(n => new ClusterNodeStatus(
            n.Id,
            n.Address ?? string.Empty,
            ParseTier(n.Tier),
            ParseState(n.State),
            n.Capacity?.Total ?? 0,
            n.Capacity?.Used ?? 0,
            n.Cpu,
            n.Network?.RxBytesPerSecond ?? 0,
            n.Network?.TxBytesPerSecond ?? 0,
            n.Allocated?.Share ?? 0,
            n.Allocated?.BitsPerSecond ?? 0,
            n.Allocated?.Bytes ?? 0));
        return new ClusterStatus(body.Metadata ?? throw Unexpected("no metadata address"), [.. nodes], [.. (body.Jobs ?? []).Select(ToJob)]);
    }

    /// <summary>The controller's last <paramref name="limit"/> events (scaling decisions with their reasons, node deaths, warm-pool changes), oldest first.</summary>
    public async Task<IReadOnlyList<ClusterEventInfo>> GetEventsAsync(int limit = 100, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, string.Create(CultureInfo.InvariantCulture, $"v1/events?limit={limit}")),
            ControllerJsonContext.Default.ListEventResponse,
            cancellationToken).ConfigureAwait(false);
        return [.. body.Select(e => new ClusterEventInfo(e.Time, e.Kind ?? string.Empty, e.Node, e.Reason ?? string.Empty))];
    }

    /// <summary>Whether the controller answers and reaches its metadata server. Throws only when the controller cannot be reached.</summary>
    public async Task<ControllerHealth> GetHealthAsync(CancellationToken cancellationToken = default)
    {
        using var response = await SendRawAsync(() => new HttpRequestMessage(HttpMethod.Get, "healthz"), cancellationToken).ConfigureAwait(false);
        var body = await ReadAsync(response, ControllerJsonContext.Default.HealthResponse, cancellationToken).ConfigureAwait(false);
        return new ControllerHealth(response.IsSuccessStatusCode && body.Status == "ok", body.Nodes, body.Error);
    }

    /// <summary>Releases the HttpClient if this object made it.</summary>
    public void Dispose()
    {
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }

    private async Task<T> SendAsync<T>(Func<HttpRequestMessage> request, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        using var response = await SendRawAsync(request, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw await ErrorAsync(response, cancellationToken).ConfigureAwait(false);
        }

        return await ReadAsync(response, type, cancellationToken).ConfigureAwait(false);
    }

    private async Task<HttpResponseMessage> SendRawAsync(Func<HttpRequestMessage> request, CancellationToken cancellationToken)
    {
        using var message = request();
        message.Headers.Authorization = _authorization;
        try
        {
            return await _http.SendAsync(message, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new PocketControllerException(null, $"cannot reach the controller at {Where}: {ex.Message}", inner: ex);
        }
        catch (TaskCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            // HttpClient reports its own timeout as a cancellation nobody asked for.
            throw new PocketControllerException(null, $"the controller at {Where} did not answer within {_http.Timeout.TotalSeconds:0} s", inner: ex);
        }
    }

    private async Task<T> ReadAsync<T>(HttpResponseMessage response, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        try
        {
            return await response.Content.ReadFromJsonAsync(type, cancellationToken).ConfigureAwait(false)
                ?? throw Unexpected("an empty body");
        }
        catch (JsonException ex)
        {
            throw new PocketControllerException(response.StatusCode, $"the controller at {Where} answered with JSON this client does not understand: {ex.Message}", inner: ex);
        }
    }

    private async Task<PocketControllerException> ErrorAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (JsonSerializer.Deserialize(text, ControllerJsonContext.Default.ErrorResponse) is { Error: { Length: > 0 } error } body)
            {
                return new PocketControllerException(response.StatusCode, error, body.Field);
            }
        }
        catch (JsonException)
        {
            // Not the controller's error shape (a proxy, another server on the port): reported by status below.
        }

        var status = (int)response.StatusCode;
        return new PocketControllerException(response.StatusCode, $"the controller at {Where} answered {status} {response.ReasonPhrase}");
    }

    private PocketControllerException Unexpected(string what) =>
        new(null, $"the controller at {Where} answered with {what}");

    private Dictionary<NodeTier, long> BytesByTier(JobUsageResponse usage) =>
        usage.BytesByTier?.ToDictionary(t => ParseTier(t.Key), t => t.Value) ?? [];

    private NodeTier ParseTier(string? tier) =>
        NodeTierNames.TryParse(tier, out var value) ? value : throw Unexpected(NodeTierNames.Unknown(tier));

    private NodeState ParseState(string? state) =>
        Enum.TryParse<NodeState>(state, ignoreCase: true, out var value) && Enum.IsDefined(value) ? value : throw Unexpected($"an unknown node state '{state}'");

    private static List<JobNodeWeight> Nodes(IReadOnlyList<JobNodeResponse>? nodes) =>
        [.. (nodes ?? []).Select(n => new JobNodeWeight(n.Id, n.Address ?? string.Empty, n.Weight))];

    private ControllerJob ToJob(JobResponse job)
    {
        var id = job.JobId ?? throw Unexpected("a job without id");
        var hints = job.Hints is { } h
            ? new JobSizeHints { Functions = h.Functions, PeakThroughputBitsPerSecond = h.PeakThroughputBitsPerSecond, CapacityBytes = h.CapacityBytes, LatencySensitive = h.LatencySensitive }
            : new JobSizeHints();
        return new ControllerJob(
            id,
            job.Name ?? id,
            ParseTier(job.Tier),
            Nodes(job.Nodes),
            job.ThroughputBound,
            job.ThroughputBitsPerSecond,
            job.CapacityBytes,
            job.NodesNeeded,
            job.RegisteredAt,
            job.LeaseExpiresAt,
            hints,
            job.Usage is { } u ? new JobUsage(id, u.Objects, u.BlockBytes, u.InlineBytes, u.Requests) { Tier = ParseTier(job.Tier), BytesByTier = BytesByTier(u) } : null)
        {
            Metering = job.Usage is { } m
                ? new JobMetering(m.Requests, m.GbSeconds, (m.GbSecondsByTier ?? new Dictionary<string, double>()).ToDictionary(t => ParseTier(t.Key), t => t.Value), m.MeteredSince)
                : null,
        };
    }

    private static Uri WithTrailingSlash(Uri uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        if (!uri.IsAbsoluteUri || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"'{uri}' is not an http:// or https:// URL", nameof(uri));
        }

        // Relative paths resolve against the last '/', so a base of http://host/pocket must become http://host/pocket/.
        return uri.AbsolutePath.EndsWith('/') ? uri : new Uri(uri.GetLeftPart(UriPartial.Path) + "/" + uri.Query);
    }
}

// The wire shapes are the shared contract records (ControllerContract.cs); the public records above are what callers see.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RegisterJobRequest))]
[JsonSerializable(typeof(RegisterJobResponse))]
[JsonSerializable(typeof(List<JobResponse>), TypeInfoPropertyName = "ListJobResponse")]
[JsonSerializable(typeof(JobResponse))]
[JsonSerializable(typeof(DeleteJobResponse))]
[JsonSerializable(typeof(ClusterResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(List<EventResponse>), TypeInfoPropertyName = "ListEventResponse")]
[JsonSerializable(typeof(HistoryResponse))]
internal sealed partial class ControllerJsonContext : JsonSerializerContext;
