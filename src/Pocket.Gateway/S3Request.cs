using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Pocket.Gateway;

/// <summary>
/// One S3 request as the gateway reads it: the raw target split into decoded path and query (SigV4 signs those,
/// not ASP.NET's normalised view), and the bucket and key it addresses.
/// </summary>
internal sealed class S3Request
{
    private S3Request(HttpContext context, string path, List<KeyValuePair<string, string>> query, string? bucket, string? key, string requestId)
    {
        Context = context;
        Path = path;
        Query = query;
        Bucket = bucket;
        Key = key;
        RequestId = requestId;
    }

    public HttpContext Context { get; }

    public string Method => Context.Request.Method;

    /// <summary>The decoded path, starting with '/'.</summary>
    public string Path { get; }

    /// <summary>Decoded query parameters in the order sent.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Query { get; }

    public string? Bucket { get; }

    /// <summary>The object key, or null when the request addresses the service or a bucket.</summary>
    public string? Key { get; }

    public string RequestId { get; }

    /// <summary>"/bucket/key" for error documents.</summary>
    public string Resource => Bucket is null ? "/" : Key is null ? "/" + Bucket : "/" + Bucket + "/" + Key;

    public static S3Request Parse(HttpContext context, string? virtualHostSuffix, string requestId)
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (string.IsNullOrEmpty(raw) || raw[0] != '/')
        {
            // Absolute-form targets (proxies) and anything odd: fall back to what Kestrel parsed.
            raw = context.Request.Path.ToUriComponent() + context.Request.QueryString.ToUriComponent();
        }

        var question = raw.IndexOf('?', StringComparison.Ordinal);
        var rawPath = question < 0 ? raw : raw[..question];
        var rawQuery = question < 0 ? string.Empty : raw[(question + 1)..];
        var path = SigV4.PercentDecode(rawPath);
        if (path.Length == 0)
        {
            path = "/";
        }

        var query = new List<KeyValuePair<string, string>>();
        foreach (var part in rawQuery.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            var name = eq < 0 ? part : part[..eq];
            var value = eq < 0 ? string.Empty : part[(eq + 1)..];
            query.Add(new(SigV4.PercentDecode(name), SigV4.PercentDecode(value)));
        }

        string? bucket = null;
        string? key = null;
        var host = context.Request.Host.Host;
        if (virtualHostSuffix is not null && host.Length > virtualHostSuffix.Length + 1
            && host.EndsWith("." + virtualHostSuffix, StringComparison.OrdinalIgnoreCase))
        {
            bucket = host[..^(virtualHostSuffix.Length + 1)].ToLowerInvariant();
            key = path.Length > 1 ? path[1..] : null;
        }
        else if (path.Length > 1)
        {
            var slash = path.IndexOf('/', 1);
            bucket = slash < 0 ? path[1..] : path[1..slash];
            key = slash < 0 || slash == path.Length - 1 ? null : path[(slash + 1)..];
        }

        return new S3Request(context, path, query, bucket, key, requestId);
    }

    public bool Has(string name) => Query.Any(q => q.Key == name);

    public string? Get(string name)
    {
        foreach (var (k, v) in Query)
        {
            if (k == name)
            {
                return v;
            }
        }

        return null;
    }

    public string? Header(string name)
    {
        var values = Context.Request.Headers[name];
        return values.Count == 0 ? null : values.ToString();
    }
}
