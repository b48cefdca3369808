using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Gateway;

/// <summary>
/// The gateway's Prometheus metrics. <c>GET /metrics</c> with <c>Authorization: Bearer &lt;cluster token&gt;</c> is a
/// scrape; any other request to that path (an S3 client signs with AWS4-HMAC-SHA256) is S3, so a bucket named
/// "metrics" still works.
/// </summary>
internal sealed class GatewayMetrics
{
    private static readonly string[] Methods = ["GET", "HEAD", "PUT", "POST", "DELETE"];

    private readonly JobToken _clusterToken;
    private readonly Counter _requests;
    private readonly Histogram _duration;
    private readonly Gauge _inFlight;

    public GatewayMetrics(JobToken clusterToken, Func<int> buckets)
    {
        _clusterToken = clusterToken;
        var factory = Prometheus.Metrics.WithCustomRegistry(Registry);
        _requests = factory.CreateCounter("pocket_gateway_requests_total", "S3 requests answered, by HTTP method and status code.", new CounterConfiguration { LabelNames = ["method", "code"] });
        _duration = factory.CreateHistogram(
            "pocket_gateway_request_duration_seconds",
            "Time to answer an S3 request (the whole body streamed), by HTTP method.",
            new HistogramConfiguration { LabelNames = ["method"], Buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });
        _inFlight = factory.CreateGauge("pocket_gateway_requests_in_flight", "S3 requests being answered now.");
        var bucketCount = factory.CreateGauge("pocket_gateway_buckets", "Buckets (jobs) the gateway knows.");
        Registry.AddBeforeCollectCallback(() => bucketCount.Set(buckets()));
    }

    public CollectorRegistry Registry { get; } = Prometheus.Metrics.NewCustomRegistry();

    /// <summary>Serves a scrape, or counts and times the S3 request <paramref name="next"/> answers.</summary>
    public async Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        var authorization = context.Request.Headers.Authorization.ToString();
        if (context.Request.Path.Equals("/metrics", StringComparison.Ordinal) && HttpMethods.IsGet(context.Request.Method) &&
            authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            await ScrapeAsync(context, authorization).ConfigureAwait(false);
            return;
        }

        var method = Array.IndexOf(Methods, context.Request.Method) >= 0 ? context.Request.Method : "OTHER";
        var started = Stopwatch.GetTimestamp();
        _inFlight.Inc();
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            _inFlight.Dec();
            _duration.WithLabels(method).Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            _requests.WithLabels(method, context.Response.StatusCode.ToString(CultureInfo.InvariantCulture)).Inc();
        }
    }

    private async Task ScrapeAsync(HttpContext context, string authorization)
    {
        var given = Encoding.ASCII.GetBytes(authorization["Bearer ".Length..].Trim().ToLowerInvariant());
        if (!_clusterToken.IsNone && !CryptographicOperations.FixedTimeEquals(given, Encoding.ASCII.GetBytes(_clusterToken.ToString())))
        {
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = "Bearer realm=\"pocket\"";
            await context.Response.WriteAsync("metrics need the cluster token: send it as 'Authorization: Bearer <token>'\n", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
    }
}
