using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pocket.Gateway;

/// <summary>
/// The controller's HTTP API as the gateway uses it: the gateway only registers and deregisters jobs there, so it
/// can run in a process (or on a host) of its own.
/// </summary>
internal sealed class ControllerApi(HttpClient http) : IDisposable
{
    /// <summary>The metadata server's host:port, as the controller reports it.</summary>
    public async Task<string> GetMetadataAddressAsync(CancellationToken cancellationToken)
    {
        using var response = await http.GetAsync(new Uri("/v1/cluster", UriKind.Relative), cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            throw new InvalidOperationException($"the controller answered {(int)response.StatusCode} to GET /v1/cluster: {ErrorText(text)}{(response.StatusCode == HttpStatusCode.Unauthorized ? " (give the gateway the cluster token: GatewayOptions.Client.ClusterToken)" : string.Empty)}");
        }

        using var document = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), cancellationToken: cancellationToken).ConfigureAwait(false);
        return document.RootElement.TryGetProperty("metadata", out var metadata) && metadata.GetString() is { Length: > 0 } address
            ? address
            : throw new InvalidOperationException("the controller's /v1/cluster names no metadata server");
    }

    /// <summary>Registers a job for a bucket; controller refusals become S3 errors with the controller's reason.</summary>
    public async Task<(string JobId, string Token)> RegisterAsync(string name, BucketHints hints, CancellationToken cancellationToken)
    {
        var body = new JsonObject { ["name"] = name };
        if (hints.Functions is { } functions)
        {
            body["functions"] = functions;
        }

        if (hints.Capacity is { } capacity)
        {
            body["capacity"] = capacity;
        }

        if (hints.PeakThroughput is { } throughput)
        {
            body["peakThroughput"] = throughput;
        }

        if (hints.LatencySensitive is { } latencySensitive)
        {
            body["latencySensitive"] = latencySensitive;
        }

        HttpResponseMessage response;
        try
        {
            response = await http.PostAsJsonAsync(new Uri("/v1/jobs", UriKind.Relative), body, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new S3Exception(S3Error.ServiceUnavailable, $"The Pocket controller could not be reached: {ex.Message}", ex);
        }

        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.Created)
            {
                using var document = JsonDocument.Parse(text);
                var root = document.RootElement;
                return (root.GetProperty("jobId").GetString()!, root.GetProperty("token").GetString()!);
            }

            var reason = ErrorText(text);
            throw response.StatusCode switch
            {
                HttpStatusCode.BadRequest => new S3Exception(S3Error.InvalidArgument, $"The bucket's hints ({BucketHints.HeaderName}) were refused: {reason}"),
                HttpStatusCode.UnprocessableEntity => new S3Exception(S3Error.InvalidArgument, $"Pocket cannot size a job for these hints: {reason}"),
                HttpStatusCode.ServiceUnavailable => new S3Exception(S3Error.ServiceUnavailable, $"Pocket could not start storage for the bucket: {reason}"),
                _ => new S3Exception(S3Error.InternalError, $"The Pocket controller answered {(int)response.StatusCode}: {reason}"),
            };
        }
    }

    /// <summary>Deregisters a bucket's job: every byte is freed at once. False when the controller did not know the job.</summary>
    public async Task<bool> DeregisterAsync(string jobId, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await http.DeleteAsync(new Uri("/v1/jobs/" + Uri.EscapeDataString(jobId), UriKind.Relative), cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new S3Exception(S3Error.ServiceUnavailable, $"The Pocket controller could not be reached: {ex.Message}", ex);
        }

        using (response)
        {
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return false;
            }

            if (!response.IsSuccessStatusCode)
            {
                var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
                throw new S3Exception(S3Error.InternalError, $"The Pocket controller answered {(int)response.StatusCode}: {ErrorText(text)}");
            }

            return true;
        }
    }

    private static string ErrorText(string body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("error", out var error) && error.GetString() is { } message)
            {
                return message;
            }
        }
        catch (JsonException)
        {
        }

        return body.Length > 300 ? body[..300] : body;
    }

    public void Dispose() => http.Dispose();
}
