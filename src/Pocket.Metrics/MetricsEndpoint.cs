using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Pocket.Hosting;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Metrics;

/// <summary>
/// <c>GET /metrics</c> in the Prometheus text format. It is as open as the role's own API: when the cluster has a
/// token, the scrape must carry it as <c>Authorization: Bearer &lt;token&gt;</c> (Prometheus sends one with
/// <c>authorization: credentials_file</c>; the PodMonitor in deploy/kubernetes reads it from the cluster secret), since
/// job names, node addresses and usage are the cluster's business.
/// </summary>
public static class MetricsEndpoint
{
    /// <summary>The path every role serves its metrics on.</summary>
    public const string Path = "/metrics";

    /// <summary>Writes every metric of <paramref name="registry"/>, or 401 when the token is missing or wrong.</summary>
    public static async Task ServeAsync(HttpContext context, CollectorRegistry registry, JobToken clusterToken)
    {
        if (!IsAuthorized(context.Request, clusterToken))
        {
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = "Bearer realm=\"pocket\"";
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync("metrics need the cluster token: send it as 'Authorization: Bearer <token>'\n", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>True when the cluster has no token, or the request carries it as a bearer token (compared in constant time).</summary>
    public static bool IsAuthorized(HttpRequest request, JobToken clusterToken)
    {
        if (clusterToken.IsNone)
        {
            return true;
        }

        var header = request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var given = Encoding.ASCII.GetBytes(header["Bearer ".Length..].Trim().ToLowerInvariant());
        var expected = Encoding.ASCII.GetBytes(clusterToken.ToString());
        return CryptographicOperations.FixedTimeEquals(given, expected);
    }
}

/// <summary>
/// A small HTTP listener that serves only <c>/metrics</c>, for the roles that speak the binary protocol (metadata,
/// storage): on its own port, off the data path, so a scrape never queues behind a client's frames. Kestrel, as in
/// the controller and gateway (the framework is in the process already); port 0 picks a free port (see <see cref="Url"/>).
/// A role that serves its protocol over TLS serves its metrics over HTTPS with the same certificate: the scrape carries
/// the cluster token, which must not cross a network in the clear when the role's own traffic does not.
/// </summary>
public sealed class MetricsListener : IAsyncDisposable
{
    private readonly WebApplication _app;

    private MetricsListener(WebApplication app, Uri url)
    {
        _app = app;
        Url = url;
    }

    /// <summary>Where the listener ended up, e.g. http://127.0.0.1:9101/ or https://... (the metrics are at <c>/metrics</c> below it).</summary>
    public Uri Url { get; }

    /// <summary>
    /// Connections the listener holds at once; the next connect waits in the kernel's backlog until one closes (an idle
    /// one closes after Kestrel's 30 s request-headers timeout). Its connections are outside the protocol's descriptor
    /// budget and come out of the descriptors the process keeps for everything else (64): a scraper needs one or two,
    /// and 300 connects held open by a peer that sent nothing aborted a metadata server whose open-file limit was 256.
    /// </summary>
    public const int MaxConnections = 16;

    /// <summary>Starts listening on <paramref name="endPoint"/>: HTTPS with <paramref name="certificate"/> when given, else plain HTTP.</summary>
    public static async Task<MetricsListener> StartAsync(IPEndPoint endPoint, CollectorRegistry registry, JobToken clusterToken, ILoggerFactory loggerFactory, X509Certificate2? certificate = null, CancellationToken cancellationToken = default)
    {
        // An empty builder: a library must not pick up appsettings.json, ASPNETCORE_URLS or the host's logging setup.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = typeof(MetricsListener).Assembly.GetName().Name });
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(endPoint, listen =>
            {
                if (certificate is not null)
                {
                    listen.UseHttps(certificate);
                }
            });
            kestrel.Limits.MaxRequestBodySize = 0;
            kestrel.AddServerHeader = false;
        });
        builder.Services.AddLogging();
        builder.Services.AddSingleton<ILoggerFactory>(new FrameworkQuietLoggerFactory(loggerFactory));
        builder.Services.AddSingleton<IHostLifetime, EmbeddedHostLifetime>();
        builder.Services.AddBoundedSocketTransport(MaxConnections);
        var app = builder.Build();
        app.Run(context =>
        {
            if (!context.Request.Path.Equals(MetricsEndpoint.Path, StringComparison.Ordinal))
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return context.Response.WriteAsync("not found: this listener serves /metrics only\n", context.RequestAborted);
            }

            if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
            {
                context.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
                return Task.CompletedTask;
            }

            return MetricsEndpoint.ServeAsync(context, registry, clusterToken);
        });
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel reported no address");
        return new MetricsListener(app, new Uri(address));
    }

    /// <summary>Stops listening.</summary>
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
