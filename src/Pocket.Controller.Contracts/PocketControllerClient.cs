using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Controller.Contracts;

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
/// the metadata server's address (<see cref="RegisterJobResponse.Metadata"/>, <see cref="ConnectClientAsync"/>).
/// Thread-safe; make one per controller and share it.
/// </summary>
/// <example>
/// <code>
/// using var controller = new PocketControllerClient(new Uri("http://127.0.0.1:7080"), clusterToken);
/// var registration = await controller.RegisterJobAsync("sort", new JobHints { Functions = 8, LatencySensitive = false });
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
    public async Task<RegisterJobResponse> RegisterJobAsync(string name, JobHints? hints = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        hints ??= JobHints.None;
        var request = new RegisterJobRequest(
            name,
            hints.Functions,
            hints.PeakThroughputBitsPerSecond is { } throughput ? JsonSerializer.SerializeToElement(throughput, ControllerJsonContext.Default.Double) : null,
            hints.CapacityBytes is { } capacity ? JsonSerializer.SerializeToElement(capacity, ControllerJsonContext.Default.Int64) : null,
            hints.LatencySensitive)
        {
            MaxCapacity = hints.MaxCapacityBytes is { } maxCapacity ? JsonSerializer.SerializeToElement(maxCapacity, ControllerJsonContext.Default.Int64) : null,
            MaxObjects = hints.MaxObjects,
            MaxKeyBytes = hints.MaxKeyBytes is { } maxKeyBytes ? JsonSerializer.SerializeToElement(maxKeyBytes, ControllerJsonContext.Default.Int64) : null,
            Lease = hints.Lease is { } lease ? JsonSerializer.SerializeToElement(lease.TotalSeconds, ControllerJsonContext.Default.Double) : null,
        };
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Post, "v1/jobs") { Content = JsonContent.Create(request, ControllerJsonContext.Default.RegisterJobRequest) },
            ControllerJsonContext.Default.RegisterJobResponse,
            cancellationToken).ConfigureAwait(false);
        return body.JobId is null || body.Metadata is null || body.Nodes is null
            ? throw Unexpected("a registration without job id, metadata server or nodes")
            : body;
    }

    /// <summary>Deregisters a job: every byte it stored is freed at once and its node shares return to the cluster.</summary>
    /// <exception cref="PocketControllerException">No such job (404), or the controller failed or could not be reached.</exception>
    public async Task<DeleteJobResponse> DeregisterAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Delete, $"v1/jobs/{Uri.EscapeDataString(jobId)}"),
            ControllerJsonContext.Default.DeleteJobResponse,
            cancellationToken).ConfigureAwait(false);
        return body.JobId is null ? body with { JobId = jobId } : body;
    }

    /// <summary>Every job the controller registered, oldest first.</summary>
    public async Task<IReadOnlyList<JobResponse>> ListJobsAsync(CancellationToken cancellationToken = default)
    {
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, "v1/jobs"),
            ControllerJsonContext.Default.ListJobResponse,
            cancellationToken).ConfigureAwait(false);
        return [.. body.Select(Checked)];
    }

    /// <summary>One job with its usage (objects, bytes, requests), or null when the controller has no such job.</summary>
    public async Task<JobResponse?> GetJobAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        try
        {
            var body = await SendAsync(
                () => new HttpRequestMessage(HttpMethod.Get, $"v1/jobs/{Uri.EscapeDataString(jobId)}"),
                ControllerJsonContext.Default.JobResponse,
                cancellationToken).ConfigureAwait(false);
            return Checked(body);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>
    /// A job's token and metadata server (<c>GET /v1/jobs/{id}/credentials</c>, cluster token only), by id, or by name
    /// when one running job has that name; null when no job matches. Several jobs of that name (and none with that id)
    /// fail with 409 Conflict, naming their ids.
    /// </summary>
    public async Task<JobCredentialsResponse?> GetJobCredentialsAsync(string jobIdOrName, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobIdOrName);
        try
        {
            var body = await SendAsync(
                () => new HttpRequestMessage(HttpMethod.Get, $"v1/jobs/{Uri.EscapeDataString(jobIdOrName)}/credentials"),
                ControllerJsonContext.Default.JobCredentialsResponse,
                cancellationToken).ConfigureAwait(false);
            return body.JobId is null || body.Metadata is null || body.Token.IsNone ? throw Unexpected("credentials without job id, token or metadata server") : body;
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>The storage nodes (tier, state, capacity, CPU, network, allocation) and the jobs.</summary>
    public async Task<ClusterResponse> GetClusterAsync(CancellationToken cancellationToken = default)
    {
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, "v1/cluster"),
            ControllerJsonContext.Default.ClusterResponse,
            cancellationToken).ConfigureAwait(false);
        return body.Metadata is null || body.Nodes is null || body.Jobs is null
            ? throw Unexpected("a cluster without metadata server, nodes or jobs")
            : body with { Jobs = [.. body.Jobs.Select(Checked)] };
    }

    /// <summary>The controller's last <paramref name="limit"/> events (scaling decisions with their reasons, node deaths, warm-pool changes), oldest first.</summary>
    public async Task<IReadOnlyList<EventResponse>> GetEventsAsync(int limit = 100, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        var body = await SendAsync(
            () => new HttpRequestMessage(HttpMethod.Get, string.Create(CultureInfo.InvariantCulture, $"v1/events?limit={limit}")),
            ControllerJsonContext.Default.ListEventResponse,
            cancellationToken).ConfigureAwait(false);
        return [.. body.Select(e => e with { Kind = e.Kind ?? string.Empty, Reason = e.Reason ?? string.Empty })];
    }

    /// <summary>
    /// Whether the controller answers and reaches every metadata server (<see cref="HealthResponse.IsHealthy"/>), some of
    /// them (<see cref="HealthResponse.IsDegraded"/>, the others in <see cref="HealthResponse.MetadataDown"/>) or none.
    /// Throws only when the controller cannot be reached.
    /// </summary>
    public async Task<HealthResponse> GetHealthAsync(CancellationToken cancellationToken = default)
    {
        using var response = await SendRawAsync(() => new HttpRequestMessage(HttpMethod.Get, "healthz"), cancellationToken).ConfigureAwait(false);
        var body = await ReadAsync(response, ControllerJsonContext.Default.HealthResponse, cancellationToken).ConfigureAwait(false);
        return response.IsSuccessStatusCode || !body.IsHealthy ? body : body with { Status = "unavailable" };
    }

    /// <summary>
    /// Connects a <see cref="PocketClient"/> to the metadata server of the cluster this controller runs, so a program
    /// needs to know one address. Open jobs registered here with <see cref="PocketClientExtensions.OpenJob(PocketClient, RegisterJobResponse)"/>.
    /// </summary>
    /// <exception cref="PocketControllerException">The controller cannot be reached or failed.</exception>
    /// <exception cref="PocketUnreachableException">The metadata server could not be reached.</exception>
    public async Task<PocketClient> ConnectClientAsync(PocketClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        var cluster = await GetClusterAsync(cancellationToken).ConfigureAwait(false);
        return await PocketClient.ConnectAsync(cluster.Metadata, options, cancellationToken).ConfigureAwait(false);
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

    // System.Text.Json leaves a missing non-nullable reference null; a reply without them is not the controller's.
    private JobResponse Checked(JobResponse job) =>
        job.JobId is null || job.Nodes is null || job.Hints is null ? throw Unexpected("a job without id, nodes or hints") : job;

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

// The wire shapes are the contract records (ControllerContract.cs), which are also what callers see.
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RegisterJobRequest))]
[JsonSerializable(typeof(RegisterJobResponse))]
[JsonSerializable(typeof(List<JobResponse>), TypeInfoPropertyName = "ListJobResponse")]
[JsonSerializable(typeof(JobResponse))]
[JsonSerializable(typeof(DeleteJobResponse))]
[JsonSerializable(typeof(JobCredentialsResponse))]
[JsonSerializable(typeof(ClusterResponse))]
[JsonSerializable(typeof(HealthResponse))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(List<EventResponse>), TypeInfoPropertyName = "ListEventResponse")]
[JsonSerializable(typeof(HistoryResponse))]
[JsonSerializable(typeof(long))]
[JsonSerializable(typeof(double))]
internal sealed partial class ControllerJsonContext : JsonSerializerContext;
