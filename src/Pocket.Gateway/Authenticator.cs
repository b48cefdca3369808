using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Pocket.Gateway;

/// <summary>Who signed a request: a configured user (every bucket) or a job's own credentials (its bucket only: <paramref name="OnlyJob"/> is the job id).</summary>
internal sealed record Principal(string AccessKey, string? OnlyJob);

/// <summary>What a verified signature leaves for the body: how the payload is sent, and the key to check chunk signatures with.</summary>
internal sealed record AuthResult(Principal Principal, string PayloadHash, byte[] SigningKey, string Timestamp, string Scope, string Signature)
{
    public bool IsChunked => PayloadHash.StartsWith("STREAMING-", StringComparison.Ordinal);

    public bool SignedChunks => PayloadHash is SigV4.StreamingSigned or SigV4.StreamingSignedTrailer;

    /// <summary>The payload's SHA-256 when the client signed it, to be checked once the body is read.</summary>
    public string? ExpectedSha256 => PayloadHash.Length == 64 && !IsChunked && PayloadHash != SigV4.UnsignedPayload ? PayloadHash.ToLowerInvariant() : null;
}

/// <summary>
/// Verifies AWS Signature Version 4, in the Authorization header form and the presigned query form. The canonical
/// request is rebuilt from the raw request target, so the path and query are signed exactly as the client sent them.
/// </summary>
internal sealed class Authenticator(GatewayOptions options, Func<string, CancellationToken, ValueTask<(string Secret, Principal Principal)?>> credentials)
{
    private const long MaxPresignedSeconds = 7 * 24 * 3600;

    public ValueTask<AuthResult> AuthenticateAsync(S3Request request)
    {
        var http = request.Context.Request;
        var authorization = http.Headers.Authorization.ToString();
        if (authorization.Length > 0)
        {
            return FromHeaderAsync(request, authorization);
        }

        if (request.Has("X-Amz-Signature") || request.Has("X-Amz-Credential"))
        {
            return FromQueryAsync(request);
        }

        if (request.Has("Signature") && request.Has("AWSAccessKeyId"))
        {
            throw new S3Exception(S3Error.InvalidRequest, "Signature Version 2 is not supported; sign requests with AWS Signature Version 4.");
        }

        throw new S3Exception(S3Error.AccessDenied, "Anonymous access is not allowed: sign the request with AWS Signature Version 4.");
    }

    private ValueTask<AuthResult> FromHeaderAsync(S3Request request, string authorization)
    {
        if (!authorization.StartsWith(SigV4.Algorithm + " ", StringComparison.Ordinal))
        {
            if (authorization.StartsWith("AWS ", StringComparison.Ordinal))
            {
                throw new S3Exception(S3Error.InvalidRequest, "Signature Version 2 is not supported; sign requests with AWS Signature Version 4.");
            }

            throw new S3Exception(S3Error.AuthorizationHeaderMalformed, $"The authorization header is malformed: the algorithm must be {SigV4.Algorithm}.");
        }

        string? credential = null, signedHeaders = null, signature = null;
        foreach (var part in authorization[(SigV4.Algorithm.Length + 1)..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                continue;
            }

            var value = part[(eq + 1)..];
            switch (part[..eq])
            {
                case "Credential": credential = value; break;
                case "SignedHeaders": signedHeaders = value; break;
                case "Signature": signature = value; break;
            }
        }

        if (credential is null || signedHeaders is null || signature is null)
        {
            throw new S3Exception(S3Error.AuthorizationHeaderMalformed, "The authorization header is malformed: it needs Credential, SignedHeaders and Signature.");
        }

        var timestamp = request.Header("x-amz-date");
        if (timestamp is null && DateTimeOffset.TryParse(request.Header("Date"), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var date))
        {
            timestamp = date.UtcDateTime.ToString(SigV4.TimestampFormat, CultureInfo.InvariantCulture);
        }

        if (timestamp is null)
        {
            throw new S3Exception(S3Error.AccessDenied, "AWS authentication requires a valid Date or x-amz-date header.");
        }

        var payloadHash = request.Header("x-amz-content-sha256")
            ?? throw new S3Exception(S3Error.InvalidRequest, "Missing required header for this request: x-amz-content-sha256.");
        if (!IsKnownPayloadHash(payloadHash))
        {
            throw new S3Exception(payloadHash.StartsWith("STREAMING-", StringComparison.Ordinal) ? S3Error.NotImplemented : S3Error.InvalidArgument,
                $"x-amz-content-sha256 '{payloadHash}' is not supported: use a hex SHA-256, {SigV4.UnsignedPayload}, {SigV4.StreamingSigned}, {SigV4.StreamingSignedTrailer} or {SigV4.StreamingUnsignedTrailer}.");
        }

        var signingTime = ParseTimestamp(timestamp, S3Error.AccessDenied);
        CheckSkew(signingTime);
        return VerifyAsync(request, credential, signedHeaders, signature, timestamp, payloadHash, presigned: false, S3Error.AuthorizationHeaderMalformed);
    }

    private ValueTask<AuthResult> FromQueryAsync(S3Request request)
    {
        var algorithm = request.Get("X-Amz-Algorithm");
        var credential = request.Get("X-Amz-Credential");
        var timestamp = request.Get("X-Amz-Date");
        var expires = request.Get("X-Amz-Expires");
        var signedHeaders = request.Get("X-Amz-SignedHeaders");
        var signature = request.Get("X-Amz-Signature");
        if (algorithm != SigV4.Algorithm || credential is null || timestamp is null || expires is null || signedHeaders is null || signature is null)
        {
            throw new S3Exception(S3Error.AuthorizationQueryParametersError,
                $"Query-string authentication needs X-Amz-Algorithm={SigV4.Algorithm}, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature.");
        }

        if (!long.TryParse(expires, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) || seconds < 1 || seconds > MaxPresignedSeconds)
        {
            throw new S3Exception(S3Error.AuthorizationQueryParametersError, "X-Amz-Expires must be a whole number of seconds from 1 to 604800 (7 days).");
        }

        var signingTime = ParseTimestamp(timestamp, S3Error.AuthorizationQueryParametersError);
        var now = options.TimeProvider.GetUtcNow();
        if (now > signingTime.AddSeconds(seconds))
        {
            throw new S3Exception(S3Error.AccessDenied, "Request has expired.");
        }

        if (signingTime > now + options.MaxClockSkew)
        {
            throw new S3Exception(S3Error.AccessDenied, "Request is not valid yet: X-Amz-Date is in the future.");
        }

        var payloadHash = request.Get("X-Amz-Content-Sha256") ?? SigV4.UnsignedPayload;
        return VerifyAsync(request, credential, signedHeaders, signature, timestamp, payloadHash, presigned: true, S3Error.AuthorizationQueryParametersError);
    }

    private async ValueTask<AuthResult> VerifyAsync(S3Request request, string credential, string signedHeaders, string signature, string timestamp, string payloadHash, bool presigned, S3Error malformed)
    {
        // Credential = access-key/yyyyMMdd/region/s3/aws4_request; the access key itself may not contain '/'.
        var parts = credential.Split('/');
        if (parts.Length != 5 || parts[4] != "aws4_request" || parts[3] != "s3" || parts[1].Length != 8)
        {
            throw new S3Exception(malformed, $"The credential '{credential}' is malformed: expected ACCESS_KEY/yyyyMMdd/REGION/s3/aws4_request.");
        }

        if (parts[1] != timestamp[..8])
        {
            throw new S3Exception(malformed, $"The credential date {parts[1]} is not the date of the signing time {timestamp}.");
        }

        var accessKey = parts[0];
        var found = await credentials(accessKey, request.Context.RequestAborted).ConfigureAwait(false) ?? throw new S3Exception(S3Error.InvalidAccessKeyId, "The AWS access key Id you provided does not exist in our records.");
        var scope = $"{parts[1]}/{parts[2]}/s3/aws4_request";
        var names = signedHeaders.Split(';');
        if (!names.Contains("host"))
        {
            throw new S3Exception(malformed, "SignedHeaders must include host.");
        }

        var canonical = CanonicalRequest(request, names, signedHeaders, payloadHash, presigned);
        var stringToSign = SigV4.StringToSign(timestamp, scope, canonical);
        var key = SigV4.SigningKey(found.Secret, parts[1], parts[2], "s3");
        var expected = SigV4.Sign(key, stringToSign);
        if (!SigV4.SignaturesEqual(expected, signature))
        {
            throw new S3Exception(S3Error.SignatureDoesNotMatch, "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
            {
                Details = [("AWSAccessKeyId", accessKey), ("StringToSign", stringToSign), ("SignatureProvided", signature), ("CanonicalRequest", canonical)],
            };
        }

        return new AuthResult(found.Principal, payloadHash, key, timestamp, scope, expected);
    }

    private static string CanonicalRequest(S3Request request, string[] signedHeaderNames, string signedHeaders, string payloadHash, bool presigned)
    {
        var builder = new StringBuilder(512);
        builder.Append(request.Method).Append('\n');
        builder.Append(SigV4.UriEncode(request.Path, keepSlash: true)).Append('\n');

        var query = request.Query
            .Where(q => !presigned || q.Key != "X-Amz-Signature")
            .Select(q => (Name: SigV4.UriEncode(q.Key, keepSlash: false), Value: SigV4.UriEncode(q.Value, keepSlash: false)))
            .OrderBy(q => q.Name, StringComparer.Ordinal)
            .ThenBy(q => q.Value, StringComparer.Ordinal);
        builder.AppendJoin('&', query.Select(q => q.Name + "=" + q.Value)).Append('\n');

        var headers = request.Context.Request.Headers;
        foreach (var name in signedHeaderNames)
        {
            var values = headers[name];
            builder.Append(name).Append(':');
            for (var i = 0; i < values.Count; i++)
            {
                if (i > 0)
                {
                    builder.Append(',');
                }

                AppendTrimmed(builder, values[i]);
            }

            builder.Append('\n');
        }

        builder.Append('\n').Append(signedHeaders).Append('\n').Append(payloadHash);
        return builder.ToString();
    }

    // SigV4 trims header values and folds runs of spaces into one.
    private static void AppendTrimmed(StringBuilder builder, string? value)
    {
        var span = (value ?? string.Empty).AsSpan().Trim();
        var lastSpace = false;
        foreach (var c in span)
        {
            if (c == ' ')
            {
                if (!lastSpace)
                {
                    builder.Append(c);
                }

                lastSpace = true;
            }
            else
            {
                builder.Append(c);
                lastSpace = false;
            }
        }
    }

    private void CheckSkew(DateTimeOffset signingTime)
    {
        var now = options.TimeProvider.GetUtcNow();
        if ((now - signingTime).Duration() > options.MaxClockSkew)
        {
            throw new S3Exception(S3Error.RequestTimeTooSkewed, "The difference between the request time and the current time is too large.")
            {
                Details = [("RequestTime", signingTime.ToString(SigV4.TimestampFormat, CultureInfo.InvariantCulture)), ("ServerTime", now.ToString(SigV4.TimestampFormat, CultureInfo.InvariantCulture))],
            };
        }
    }

    private static DateTimeOffset ParseTimestamp(string timestamp, S3Error error) =>
        DateTimeOffset.TryParseExact(timestamp, SigV4.TimestampFormat, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var time)
            ? time
            : throw new S3Exception(error, $"'{timestamp}' is not a signing time of the form yyyyMMddTHHmmssZ.");

    private static bool IsKnownPayloadHash(string value) =>
        value is SigV4.UnsignedPayload or SigV4.StreamingSigned or SigV4.StreamingSignedTrailer or SigV4.StreamingUnsignedTrailer
        || (value.Length == 64 && value.All(char.IsAsciiHexDigit));
}
