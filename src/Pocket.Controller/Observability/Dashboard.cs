using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Pocket.Controller.Sizing;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Controller.Observability;

/// <summary>A node class as the dashboard prices it: what one node offers and costs.</summary>
/// <param name="Tier">dram, ssd or hdd.</param>
/// <param name="CapacityBytes">Bytes one node offers.</param>
/// <param name="CostPerHour">Dollars per node-hour.</param>
/// <param name="CostPerGbSecond">Dollars per GB-second of that tier: the node's price spread over its capacity.</param>
public sealed record NodeClassResponse(string Tier, long CapacityBytes, double CostPerHour, double CostPerGbSecond);

/// <summary>
/// The live dashboard at <c>/</c> and the Prometheus metrics at <c>/metrics</c>. The page and its scripts are open (they
/// hold no cluster data); the page asks for the cluster token (or reads it from the URL fragment, which browsers never
/// send to the server) and reads everything through the API with it, so it is exactly as open as the API. The chart
/// library (uPlot) is taken from the npm registry at build time, checked against its integrity hash and embedded: the
/// page loads nothing from elsewhere and works offline.
/// </summary>
internal static class Dashboard
{
    /// <summary>Where the page's own files are served.</summary>
    public const string AssetPrefix = "/dashboard/";

    private static readonly Dictionary<string, string> ContentTypes = new(StringComparer.Ordinal)
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
    };

    public static void Map(IEndpointRouteBuilder app, CollectorRegistry metrics, SizingOptions sizing)
    {
        app.MapGet("/", (HttpContext context) => ServeAsync(context, "index.html")).ExcludeFromDescription();
        app.MapGet(AssetPrefix + "{file}", (HttpContext context, string file) => ServeAsync(context, file)).ExcludeFromDescription();
        app.MapGet("/metrics", async (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await metrics.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
        }).ExcludeFromDescription();
        app.MapGet("/v1/node-classes", () => sizing.NodeClasses.Select(c => new NodeClassResponse(
                NodeTierNames.Name(c.Tier),
                c.CapacityBytes,
                c.CostPerHour,
                c.CapacityBytes > 0 ? c.CostPerHour / 3600 / (c.CapacityBytes / 1e9) : 0)).ToList())
            .WithName("GetNodeClasses")
            .WithTags("cluster")
            .WithSummary("The node classes the controller sizes with: capacity and price per node-hour and per GB-second.")
            .Produces<NodeClassResponse[]>();
    }

    private static async Task ServeAsync(HttpContext context, string file)
    {
        var extension = Path.GetExtension(file);
        using var stream = ContentTypes.TryGetValue(extension, out var type) ? Assembly.GetExecutingAssembly().GetManifestResourceStream("Pocket.Controller.Dashboard." + file) : null;
        if (stream is null)
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        context.Response.ContentType = type;
        context.Response.Headers.CacheControl = "no-cache";

        // The page runs only its own scripts and talks only to this controller.
        context.Response.Headers.ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";
        context.Response.Headers.XContentTypeOptions = "nosniff";
        await stream.CopyToAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
    }
}
