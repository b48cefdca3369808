using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Observability;
using Pocket.Protocol;

namespace Pocket.Controller.Api;

/// <summary>
/// Every request but the open paths must carry the cluster token as <c>Authorization: Bearer &lt;token&gt;</c>: job
/// registration hands out job tokens, and deregistration frees any job's data, so the API is the cluster's admin
/// surface. A controller without a cluster token (a cluster that has none) checks nothing, like the metadata server.
/// </summary>
internal sealed class ControllerAuthentication(JobToken clusterToken, ILogger logger)
{
    /// <summary>
    /// Paths open to everyone: the health check (probes and load balancers carry no secrets, and it reveals only a
    /// count of live nodes) and the OpenAPI document (the API's shape, no cluster data).
    /// </summary>
    public static readonly IReadOnlyList<string> OpenPaths = ["/healthz", "/openapi/v1.json"];

    private readonly byte[] _expected = clusterToken.IsNone ? [] : Encoding.ASCII.GetBytes(clusterToken.ToString());

    public Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        if (_expected.Length == 0 || IsOpen(context.Request.Path))
        {
            return next(context);
        }

        var header = context.Request.Headers.Authorization.ToString();
        string? problem = null;
        if (header.Length == 0)
        {
            problem = "this endpoint needs the cluster token: send it as 'Authorization: Bearer <token>' (the token is $POCKET_CLUSTER_TOKEN of the cluster)";
        }
        else if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            problem = "the Authorization header must be 'Bearer <cluster token>'";
        }
        else if (!Matches(header.AsSpan("Bearer ".Length).Trim()))
        {
            problem = "the bearer token is not the cluster token";
        }

        if (problem is null)
        {
            return next(context);
        }

        ControllerLog.Unauthorized(logger, context.Request.Method, context.Request.Path, problem);
        context.Response.Headers.WWWAuthenticate = "Bearer realm=\"pocket\"";
        return Results.Json(new ErrorResponse(problem, "Authorization"), statusCode: StatusCodes.Status401Unauthorized).ExecuteAsync(context);
    }

    // The dashboard's page and scripts hold no cluster data: they ask for the token and read the API with it.
    private static bool IsOpen(PathString path) =>
        OpenPaths.Any(open => path.Equals(open, StringComparison.OrdinalIgnoreCase)) ||
        path.Equals("/", StringComparison.Ordinal) ||
        path.StartsWithSegments(Dashboard.AssetPrefix.TrimEnd('/'), StringComparison.Ordinal);

    // Lower-case hex of the same length compared in constant time; any other text (wrong length, upper case) fails
    // without revealing how much of it matched.
    private bool Matches(ReadOnlySpan<char> given)
    {
        if (given.Length != _expected.Length)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[given.Length];
        for (var i = 0; i < given.Length; i++)
        {
            bytes[i] = given[i] < 128 ? (byte)char.ToLowerInvariant(given[i]) : (byte)0;
        }

        return CryptographicOperations.FixedTimeEquals(bytes, _expected);
    }
}
