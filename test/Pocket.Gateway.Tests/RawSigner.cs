using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Pocket.Gateway.Tests;

/// <summary>
/// Signs hand-made HTTP requests with SigV4 (header and presigned forms), for what the SDK will not send: unsigned
/// bodies, unsigned aws-chunked payloads, expired links. Written from the spec, apart from the gateway's verifier.
/// </summary>
internal sealed class RawSigner(Uri endpoint, string accessKey, string secretKey, string region = "us-east-1")
{
    public static string Encode(string value, bool keepSlash)
    {
        var builder = new StringBuilder();
        foreach (var b in Encoding.UTF8.GetBytes(value))
        {
            var c = (char)b;
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '~' || (keepSlash && c == '/'))
            {
                builder.Append(c);
            }
            else
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return builder.ToString();
    }

    private static string Hex(byte[] bytes) => Convert.ToHexStringLower(bytes);

    private static byte[] Hmac(byte[] key, string data) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(data));

    public byte[] SigningKey(string date) =>
        Hmac(Hmac(Hmac(Hmac(Encoding.UTF8.GetBytes("AWS4" + secretKey), date), region), "s3"), "aws4_request");

    private static string CanonicalQuery(IEnumerable<(string Name, string Value)> query) =>
        string.Join('&', query.Select(q => (Name: Encode(q.Name, false), Value: Encode(q.Value, false)))
            .OrderBy(q => q.Name, StringComparer.Ordinal).ThenBy(q => q.Value, StringComparer.Ordinal).Select(q => q.Name + "=" + q.Value));

    /// <summary>A request signed in the Authorization header; <paramref name="payloadHash"/> goes in x-amz-content-sha256.</summary>
    public HttpRequestMessage Sign(HttpMethod method, string path, string payloadHash, HttpContent? content = null, DateTimeOffset? at = null, IDictionary<string, string>? headers = null)
    {
        var time = (at ?? DateTimeOffset.UtcNow).UtcDateTime;
        var timestamp = time.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        var date = timestamp[..8];
        var encodedPath = Encode(path, keepSlash: true);
        var request = new HttpRequestMessage(method, new Uri(endpoint, encodedPath)) { Content = content };
        var host = endpoint.Authority;
        var signed = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["host"] = host,
            ["x-amz-content-sha256"] = payloadHash,
            ["x-amz-date"] = timestamp,
        };
        foreach (var (name, value) in headers ?? new Dictionary<string, string>())
        {
            signed[name.ToLowerInvariant()] = value;
        }

        var canonicalHeaders = string.Concat(signed.Select(h => $"{h.Key}:{h.Value.Trim()}\n"));
        var signedHeaders = string.Join(';', signed.Keys);
        var canonical = $"{method.Method}\n{encodedPath}\n\n{canonicalHeaders}\n{signedHeaders}\n{payloadHash}";
        var scope = $"{date}/{region}/s3/aws4_request";
        var stringToSign = $"AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{Hex(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))}";
        var signature = Hex(Hmac(SigningKey(date), stringToSign));
        foreach (var (name, value) in signed)
        {
            if (name == "host")
            {
                continue;
            }

            if (!request.Headers.TryAddWithoutValidation(name, value))
            {
                request.Content ??= new ByteArrayContent([]);
                request.Content.Headers.TryAddWithoutValidation(name, value);
            }
        }

        request.Headers.TryAddWithoutValidation("Authorization", $"AWS4-HMAC-SHA256 Credential={accessKey}/{scope}, SignedHeaders={signedHeaders}, Signature={signature}");
        return request;
    }

    /// <summary>A presigned URL for <paramref name="method"/> on <paramref name="path"/>, signed at <paramref name="at"/>.</summary>
    public Uri Presign(HttpMethod method, string path, TimeSpan expires, DateTimeOffset at)
    {
        var timestamp = at.UtcDateTime.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        var date = timestamp[..8];
        var scope = $"{date}/{region}/s3/aws4_request";
        var query = new List<(string, string)>
        {
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", $"{accessKey}/{scope}"),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", ((long)expires.TotalSeconds).ToString(CultureInfo.InvariantCulture)),
            ("X-Amz-SignedHeaders", "host"),
        };
        var encodedPath = Encode(path, keepSlash: true);
        var canonicalQuery = CanonicalQuery(query);
        var canonical = $"{method.Method}\n{encodedPath}\n{canonicalQuery}\nhost:{endpoint.Authority}\n\nhost\nUNSIGNED-PAYLOAD";
        var stringToSign = $"AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{Hex(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))}";
        var signature = Hex(Hmac(SigningKey(date), stringToSign));
        return new Uri(endpoint, $"{encodedPath}?{canonicalQuery}&X-Amz-Signature={signature}");
    }
}
