using System.Globalization;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Gateway;

/// <summary>
/// Every S3 request: parse, authenticate, dispatch on method + bucket/key + sub-resource, and turn failures into
/// S3's XML errors. Operations live in the partial files by area (buckets, objects, listing, multipart).
/// </summary>
internal sealed partial class S3Handler
{
    private const string DefaultContentType = "binary/octet-stream";

    private readonly GatewayOptions _options;
    private readonly PocketClient _client;
    private readonly PocketControllerClient _controller;
    private readonly BucketStore _buckets;
    private readonly ILogger _logger;
    private readonly Authenticator _authenticator;
    private readonly JobAdoption _adoption;
    private readonly ProtocolLimits _limits = ProtocolLimits.Default;
    private long _requestCounter;

    public S3Handler(GatewayOptions options, PocketClient client, PocketControllerClient controller, BucketStore buckets, ILogger logger)
    {
        _options = options;
        _client = client;
        _controller = controller;
        _buckets = buckets;
        _logger = logger;
        _adoption = new JobAdoption(controller, buckets, options.TimeProvider, logger);
        _authenticator = new Authenticator(options, FindCredentialsAsync);
    }

    private TimeProvider Clock => _options.TimeProvider;

    public async Task HandleAsync(HttpContext context)
    {
        var requestId = NewRequestId();
        context.Response.Headers["x-amz-request-id"] = requestId;
        context.Response.Headers["x-amz-id-2"] = requestId;
        S3Request? request = null;
        try
        {
            request = S3Request.Parse(context, _options.VirtualHostSuffix, requestId);
            var auth = await _authenticator.AuthenticateAsync(request).ConfigureAwait(false);
            await DispatchAsync(request, auth).ConfigureAwait(false);
        }
        catch (Exception ex) when (context.RequestAborted.IsCancellationRequested && ex is OperationCanceledException or IOException)
        {
            // The client went away; there is nobody to answer.
        }
        catch (Exception ex)
        {
            var error = ToS3(ex, request);
            await WriteErrorAsync(context, request, error).ConfigureAwait(false);
        }
    }

    private Task DispatchAsync(S3Request request, AuthResult auth)
    {
        var method = request.Method;
        if (request.Bucket is null)
        {
            return HttpMethods.IsGet(method)
                ? ListBucketsAsync(request, auth)
                : throw new S3Exception(S3Error.MethodNotAllowed, $"{method} is not allowed on the service.");
        }

        if (request.Key is null)
        {
            if (HttpMethods.IsPut(method))
            {
                RefuseSubresources(request, "PUT on a bucket");
                return CreateBucketAsync(request, auth);
            }

            if (HttpMethods.IsDelete(method))
            {
                RefuseSubresources(request, "DELETE on a bucket");
                return DeleteBucketAsync(request, auth);
            }

            if (HttpMethods.IsHead(method))
            {
                return HeadBucketAsync(request, auth);
            }

            if (HttpMethods.IsGet(method))
            {
                if (request.Has("location"))
                {
                    return GetBucketLocationAsync(request, auth);
                }

                if (request.Has("versioning"))
                {
                    return GetBucketVersioningAsync(request, auth);
                }

                if (request.Has("uploads"))
                {
                    return ListMultipartUploadsAsync(request, auth);
                }

                RefuseSubresources(request, "GET on a bucket");
                return request.Get("list-type") == "2" ? ListObjectsAsync(request, auth, v2: true) : ListObjectsAsync(request, auth, v2: false);
            }

            if (HttpMethods.IsPost(method) && request.Has("delete"))
            {
                return DeleteObjectsAsync(request, auth);
            }

            throw new S3Exception(S3Error.MethodNotAllowed, $"{method} is not allowed on a bucket here.");
        }

        if (HttpMethods.IsPut(method))
        {
            if (request.Has("uploadId"))
            {
                return request.Header("x-amz-copy-source") is not null ? UploadPartCopyAsync(request, auth) : UploadPartAsync(request, auth);
            }

            RefuseSubresources(request, "PUT on an object");
            return request.Header("x-amz-copy-source") is not null ? CopyObjectAsync(request, auth) : PutObjectAsync(request, auth);
        }

        if (HttpMethods.IsGet(method))
        {
            if (request.Has("uploadId"))
            {
                return ListPartsAsync(request, auth);
            }

            RefuseSubresources(request, "GET on an object");
            return GetObjectAsync(request, auth, head: false);
        }

        if (HttpMethods.IsHead(method))
        {
            return GetObjectAsync(request, auth, head: true);
        }

        if (HttpMethods.IsDelete(method))
        {
            if (request.Has("uploadId"))
            {
                return AbortMultipartUploadAsync(request, auth);
            }

            RefuseSubresources(request, "DELETE on an object");
            return DeleteObjectAsync(request, auth);
        }

        if (HttpMethods.IsPost(method))
        {
            if (request.Has("uploads"))
            {
                return CreateMultipartUploadAsync(request, auth);
            }

            if (request.Has("uploadId"))
            {
                return CompleteMultipartUploadAsync(request, auth);
            }
        }

        throw new S3Exception(S3Error.MethodNotAllowed, $"{method} is not allowed on an object here.");
    }

    // Sub-resources the gateway does not implement (acl, tagging, policy, ...) must not fall through to the plain
    // operation: a GET ?acl answered with the object's bytes would confuse any client.
    private static readonly HashSet<string> PlainParameters = new(StringComparer.Ordinal)
    {
        "list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "encoding-type", "fetch-owner", "marker",
        "response-content-type", "response-content-language", "response-expires", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "partNumber", "versionId", "x-id",
        "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
        "X-Amz-Content-Sha256", "x-amz-checksum-mode", "x-amz-sdk-checksum-algorithm",
    };

    private static void RefuseSubresources(S3Request request, string what)
    {
        foreach (var (name, _) in request.Query)
        {
            if (!PlainParameters.Contains(name))
            {
                throw new S3Exception(S3Error.NotImplemented, $"{what} with '?{name}' is not implemented by the Pocket gateway.");
            }
        }
    }

    private async ValueTask<(string Secret, Principal Principal)?> FindCredentialsAsync(string accessKey, CancellationToken cancellationToken)
    {
        if (_options.Users.TryGetValue(accessKey, out var secret))
        {
            return (secret, new Principal(accessKey, null));
        }

        // A job's own keys: access key = job id, secret = token, whether the job is a bucket here yet or not.
        if (_options.AllowJobCredentials && await _adoption.FindJobKeyAsync(accessKey, cancellationToken).ConfigureAwait(false) is { } job)
        {
            return (job.Secret, new Principal(accessKey, job.JobId));
        }

        return null;
    }

    /// <summary>
    /// The addressed bucket (by its name, or by its job's id), if it exists and the caller may use it; a registered job
    /// that is not a bucket yet is adopted here, once the request's signature has been checked.
    /// </summary>
    private async ValueTask<Bucket> RequireBucketAsync(string name, AuthResult auth)
    {
        var only = auth.Principal.OnlyJob;
        var known = _buckets.Find(name) ?? _buckets.FindByJobId(name);
        if (only is not null && (known is null ? name != only : known.Entry.JobId != only))
        {
            // Checked before any look-up, so a job's keys learn nothing about other buckets.
            throw new S3Exception(S3Error.AccessDenied, $"Access Denied: these credentials are job {only}'s, for its bucket only.");
        }

        // Not cancelled with the request: an adoption the controller has answered is finished and saved either way.
        return known
            ?? await _adoption.FindAsync(name, CancellationToken.None).ConfigureAwait(false)
            ?? throw S3Exception.NoSuchBucket(name);
    }

    private S3Exception ToS3(Exception ex, S3Request? request)
    {
        switch (ex)
        {
            case S3Exception s3:
                return s3;
            case PocketUnauthorizedException when request?.Bucket is { } bucketName && _buckets.Find(bucketName) is { } bucket:
                // The job behind the bucket has ended (deregistered elsewhere, or its lease ran out).
                GatewayLog.BucketGone(_logger, bucket.Name, bucket.Entry.JobId);
                _ = ForgetBucketAsync(bucket.Name);
                return S3Exception.NoSuchBucket(bucket.Name);
            case ObjectNotFoundException:
                return S3Exception.NoSuchKey(request?.Key ?? string.Empty);
            case CapacityExceededException capacity:
                return new S3Exception(S3Error.InsufficientStorage, $"Pocket has no room for this data: {capacity.Message}", ex);
            case QuotaExceededException quota:
                return new S3Exception(S3Error.QuotaExceeded, $"The bucket is over its quota: {quota.Message}", ex);
            case PocketException { Status: Status.InvalidKey } invalid:
                return new S3Exception(S3Error.InvalidArgument, invalid.Message, ex);
            case NodeUnavailableException unavailable:
                // Retryable: S3 clients (boto3, the AWS CLI) retry a 503 with back-off, which is what this needs.
                return new S3Exception(S3Error.ServiceUnavailable, $"A storage node holding this object is not answering; retry shortly: {unavailable.Message}", ex);
            case PocketUnreachableException lost:
                return new S3Exception(S3Error.ServiceUnavailable, $"A Pocket server could not be reached: {lost.Message}", ex);
            case PocketException pocket:
                GatewayLog.PocketFailed(_logger, request?.Method ?? "?", request?.Path ?? "?", pocket.Status.ToString(), pocket.Message);
                return new S3Exception(S3Error.InternalError, $"Pocket failed the request: {pocket.Message}", ex);
            case BadHttpRequestException bad:
                return new S3Exception(S3Error.IncompleteBody, $"The request body could not be read: {bad.Message}", ex);
            default:
                GatewayLog.RequestFailed(_logger, ex, request?.Method ?? "?", request?.Path ?? "?");
                return new S3Exception(S3Error.InternalError, "We encountered an internal error. Please try again.", ex);
        }
    }

    // Runs unawaited while the error is answered; the map changes at once, only saving it can fail.
    private async Task ForgetBucketAsync(string name)
    {
        try
        {
            await _buckets.RemoveAsync(name).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            GatewayLog.CleanupFailed(_logger, BucketStore.FileName, name, ex.Message);
        }
    }

    private async Task WriteErrorAsync(HttpContext context, S3Request? request, S3Exception error)
    {
        var method = context.Request.Method;
        var path = request?.Path ?? context.Request.Path.ToString();
        if (context.Response.HasStarted)
        {
            // Headers (and maybe bytes) are out: the only honest signal left is a broken connection.
            GatewayLog.AbortedMidResponse(_logger, method, path, error.Message);
            context.Abort();
            return;
        }

        GatewayLog.RequestRefused(_logger, method, path, error.Error.Code, error.Message);
        var response = context.Response;
        response.Headers.Remove("ETag");
        response.Headers.Remove("Last-Modified");
        response.Headers.Remove("Content-Range");
        response.StatusCode = error.Error.Status;
        if (HttpMethods.IsHead(method))
        {
            // HEAD answers carry no body; S3 sends the status alone.
            response.ContentLength = 0;
            return;
        }

        var xml = S3Xml.Error(error, request?.Resource ?? "/", request?.RequestId ?? string.Empty);
        response.ContentType = "application/xml";
        response.ContentLength = xml.Length;
        try
        {
            await response.Body.WriteAsync(xml, context.RequestAborted).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
        }
    }

    private static async Task WriteXmlAsync(HttpContext context, byte[] xml, int status = StatusCodes.Status200OK)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "application/xml";
        response.ContentLength = xml.Length;
        await response.Body.WriteAsync(xml, context.RequestAborted).ConfigureAwait(false);
    }

    private string NewRequestId()
    {
        var n = Interlocked.Increment(ref _requestCounter);
        return $"{Environment.ProcessId:X4}{n:X12}";
    }

    /// <summary>A small body read whole (XML documents), checked against the signed SHA-256 or Content-MD5 when given.</summary>
    private async Task<byte[]> ReadSmallBodyAsync(S3Request request, AuthResult auth)
    {
        var (stream, _) = OpenBody(request, auth, _options.MaxXmlBody, allowUnknownLength: true);
        await using (stream.ConfigureAwait(false))
        {
            using var buffer = new MemoryStream();
            await stream.CopyToAsync(buffer, request.Context.RequestAborted).ConfigureAwait(false);
            return buffer.ToArray();
        }
    }

    /// <summary>
    /// The request payload as a checked stream: aws-chunked decoded, counted against the declared length and
    /// <paramref name="maxLength"/>, MD5-hashed for the ETag. Returns the declared length when there is one.
    /// </summary>
    private (ContentStream Stream, long? Length) OpenBody(S3Request request, AuthResult auth, long maxLength, bool allowUnknownLength = false)
    {
        var http = request.Context.Request;
        Stream body = http.Body;
        long? length;
        if (auth.IsChunked)
        {
            var decoded = request.Header("x-amz-decoded-content-length");
            if (decoded is null || !long.TryParse(decoded, NumberStyles.None, CultureInfo.InvariantCulture, out var d))
            {
                throw new S3Exception(S3Error.MissingContentLength, "An aws-chunked body needs the x-amz-decoded-content-length header.");
            }

            length = d;
            body = new AwsChunkedStream(body, auth.SignedChunks ? auth : null);
        }
        else
        {
            length = http.ContentLength;
            if (length is null && !allowUnknownLength && !http.Headers.TransferEncoding.ToString().Contains("chunked", StringComparison.OrdinalIgnoreCase))
            {
                throw new S3Exception(S3Error.MissingContentLength, "You must provide the Content-Length HTTP header.");
            }
        }

        if (length > maxLength)
        {
            throw new S3Exception(S3Error.EntityTooLarge, $"Your proposed upload of {length} bytes exceeds the maximum allowed size of {maxLength} bytes.");
        }

        byte[]? md5 = null;
        if (request.Header("Content-MD5") is { } contentMd5)
        {
            var bytes = new byte[16];
            if (!Convert.TryFromBase64String(contentMd5.Trim(), bytes, out var written) || written != 16)
            {
                throw new S3Exception(S3Error.InvalidDigest, "The Content-MD5 you specified is not valid.");
            }

            md5 = bytes;
        }

        return (new ContentStream(body, length, maxLength, auth.ExpectedSha256, md5), length);
    }

    /// <summary>Reads a stored record object (inline on the metadata server, so one round trip); null when absent.</summary>
    private static async Task<byte[]?> GetSmallAsync(PocketJob job, string key, CancellationToken cancellationToken)
    {
        try
        {
            return await job.GetAsync(key, GetFlags.None, cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectNotFoundException)
        {
            return null;
        }
    }

    private static async Task<ObjectRecord?> GetRecordAsync(PocketJob job, string pocketKey, CancellationToken cancellationToken) =>
        await GetSmallAsync(job, KeyMapping.RecordKey(pocketKey), cancellationToken).ConfigureAwait(false) is { } bytes ? ObjectRecord.TryParse(bytes) : null;

    /// <summary>Writes a record, replacing one a concurrent writer may have left.</summary>
    private static async Task PutReplacingAsync(PocketJob job, string key, byte[] data, CancellationToken cancellationToken)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await job.PutAsync(key, data, PutFlags.None, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (ObjectExistsException) when (attempt < 3)
            {
                await DeleteQuietlyAsync(job, key, recursive: false, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static async Task DeleteQuietlyAsync(PocketJob job, string key, bool recursive, CancellationToken cancellationToken)
    {
        try
        {
            await job.DeleteAsync(key, recursive, cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectNotFoundException)
        {
        }
    }

    /// <summary>Removes an object and its record ahead of an overwrite (S3 overwrites; Pocket objects are write-once).</summary>
    private static async Task DeleteObjectAndRecordAsync(PocketJob job, string pocketKey, CancellationToken cancellationToken)
    {
        await DeleteQuietlyAsync(job, KeyMapping.RecordKey(pocketKey), recursive: false, cancellationToken).ConfigureAwait(false);
        await DeleteQuietlyAsync(job, pocketKey, recursive: false, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Stores everything read from <paramref name="source"/> at <paramref name="key"/>. Bodies that fit Pocket's
    /// inline threshold are read whole first, so small objects take the one-round-trip path.
    /// </summary>
    private async Task PutStreamAsync(PocketJob job, string key, ContentStream source, long? length, CancellationToken cancellationToken)
    {
        if (length is { } known && known <= _client.Options.SmallObjectThreshold)
        {
            var buffer = new byte[known];
            var filled = 0;
            while (true)
            {
                var n = await source.ReadAsync(buffer.AsMemory(filled), cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                filled += n;
            }

            await job.PutAsync(key, buffer.AsMemory(0, filled), PutFlags.None, cancellationToken).ConfigureAwait(false);
            return;
        }

        await job.PutAsync(key, source, PutFlags.None, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <paramref name="produce"/> (which writes into a stream, e.g. a Pocket get) and <paramref name="consume"/>
    /// (which reads one, e.g. a Pocket put) together through a bounded pipe: copies and multipart assembly never hold
    /// more than a few MiB. A failure on either side ends both and is rethrown.
    /// </summary>
    private static async Task<T> PipeAsync<T>(Func<Stream, CancellationToken, Task> produce, Func<Stream, CancellationToken, Task<T>> consume, CancellationToken cancellationToken)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 8 << 20, resumeWriterThreshold: 4 << 20, minimumSegmentSize: 64 << 10, useSynchronizationContext: false));
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var producer = Task.Run(async () =>
        {
            try
            {
                var writer = pipe.Writer.AsStream(leaveOpen: true);
                await produce(writer, cancel.Token).ConfigureAwait(false);
                await writer.FlushAsync(cancel.Token).ConfigureAwait(false);
                await pipe.Writer.CompleteAsync().ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                await pipe.Writer.CompleteAsync(ex).ConfigureAwait(false);
                throw;
            }
        }, CancellationToken.None);

        try
        {
            var result = await consume(pipe.Reader.AsStream(leaveOpen: true), cancel.Token).ConfigureAwait(false);
            await producer.ConfigureAwait(false);
            return result;
        }
        catch
        {
            await cancel.CancelAsync().ConfigureAwait(false);
            await pipe.Reader.CompleteAsync().ConfigureAwait(false);
            try
            {
                await producer.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The consumer's failure (which already carries the producer's, when that came first) is rethrown.
            }

            throw;
        }
    }

    /// <summary>Content-Type and the other stored headers, and x-amz-meta-* user metadata, from a request.</summary>
    private static (Dictionary<string, string>? Headers, Dictionary<string, string>? Metadata) StoredHeadersOf(S3Request request)
    {
        Dictionary<string, string>? headers = null;
        foreach (var name in ObjectRecord.StoredHeaders)
        {
            var value = request.Header(name);
            if (name == "Content-Encoding" && value is not null)
            {
                // "aws-chunked" describes how this request's body travelled, not the object (S3 drops it too).
                value = string.Join(',', value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    .Where(v => !v.Equals("aws-chunked", StringComparison.OrdinalIgnoreCase)));
            }

            if (value is { Length: > 0 })
            {
                (headers ??= new(StringComparer.Ordinal))[name] = value;
            }
        }

        Dictionary<string, string>? metadata = null;
        foreach (var (name, values) in request.Context.Request.Headers)
        {
            if (name.StartsWith("x-amz-meta-", StringComparison.OrdinalIgnoreCase) && name.Length > "x-amz-meta-".Length)
            {
                (metadata ??= new(StringComparer.Ordinal))[name["x-amz-meta-".Length..].ToLowerInvariant()] = values.ToString();
            }
        }

        return (headers, metadata);
    }

    private static string Md5Hex(byte[] md5) => Convert.ToHexStringLower(md5);

    /// <summary>S3's multipart ETag: MD5 of the concatenated binary part MD5s, then "-" and the part count.</summary>
    private static string MultipartETag(IReadOnlyList<byte[]> partMd5s)
    {
        using var md5 = IncrementalHash.CreateHash(HashAlgorithmName.MD5);
        foreach (var part in partMd5s)
        {
            md5.AppendData(part);
        }

        return $"{Convert.ToHexStringLower(md5.GetHashAndReset())}-{partMd5s.Count}";
    }

    private static string Unquote(string etag) => etag.Trim().Trim('"').ToLowerInvariant();
}
