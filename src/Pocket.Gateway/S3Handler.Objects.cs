using System.Globalization;
using Microsoft.AspNetCore.Http;
using Pocket.Client;

namespace Pocket.Gateway;

/// <summary>Object operations. Bytes stream between the HTTP connection and Pocket; only records are read whole.</summary>
internal sealed partial class S3Handler
{
    private async Task PutObjectAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var key = KeyMapping.ToPocket(request.Key!, _limits);
        var cancellationToken = request.Context.RequestAborted;
        var (source, length) = OpenBody(request, auth, _options.MaxPutSize);
        await using (source.ConfigureAwait(false))
        {
            // If-None-Match: * asks for Pocket's own write-once rule; without it S3 overwrites, which Pocket can only
            // do as delete-then-put (readers see the key missing in between; see docs/gateway.md).
            var createOnly = request.Header("If-None-Match")?.Trim() == "*";
            if (!createOnly)
            {
                await DeleteObjectAndRecordAsync(bucket.Job, key, cancellationToken).ConfigureAwait(false);
            }

            try
            {
                await PutStreamAsync(bucket.Job, key, source, length, cancellationToken).ConfigureAwait(false);
            }
            catch (ObjectExistsException) when (createOnly)
            {
                throw new S3Exception(S3Error.PreconditionFailed, "At least one of the pre-conditions you specified did not hold: the object exists.");
            }
            catch (ObjectExistsException)
            {
                throw new S3Exception(S3Error.OperationAborted, "A conflicting operation is in progress against this key: another upload stored it first. Try again.");
            }

            var (headers, metadata) = StoredHeadersOf(request);
            var record = new ObjectRecord { ETag = Md5Hex(source.Md5), Size = source.BytesRead, Modified = Clock.GetUtcNow(), Headers = headers, Metadata = metadata };
            await PutReplacingAsync(bucket.Job, KeyMapping.RecordKey(key), record.Serialize(), cancellationToken).ConfigureAwait(false);
            request.Context.Response.Headers.ETag = record.QuotedETag;
            request.Context.Response.StatusCode = StatusCodes.Status200OK;
            request.Context.Response.ContentLength = 0;
        }
    }

    private async Task GetObjectAsync(S3Request request, AuthResult auth, bool head)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var key = KeyMapping.ToPocket(request.Key!, _limits);
        var cancellationToken = request.Context.RequestAborted;
        var (info, record) = await LookupAsync(bucket, key, cancellationToken).ConfigureAwait(false);
        if (info is null)
        {
            throw S3Exception.NoSuchKey(request.Key!);
        }

        var modified = record?.Modified ?? bucket.Entry.Created;
        var response = request.Context.Response;
        if (CheckConditions(request, record, modified) is { } status)
        {
            response.StatusCode = status;
            if (record is not null)
            {
                response.Headers.ETag = record.QuotedETag;
            }

            response.Headers.LastModified = S3Xml.HttpTime(modified);
            if (status == StatusCodes.Status412PreconditionFailed)
            {
                throw new S3Exception(S3Error.PreconditionFailed, "At least one of the pre-conditions you specified did not hold.");
            }

            return;
        }

        var size = info.Size;
        var (offset, length, partial) = request.Get("partNumber") is { } partText
            ? PartRange(partText, record, size)
            : ParseRange(request.Header("Range"), size);
        response.StatusCode = partial ? StatusCodes.Status206PartialContent : StatusCodes.Status200OK;
        response.ContentLength = length;
        if (partial)
        {
            response.Headers.ContentRange = $"bytes {offset}-{offset + length - 1}/{size}";
        }

        response.Headers.AcceptRanges = "bytes";
        response.Headers.LastModified = S3Xml.HttpTime(modified);
        if (record is not null)
        {
            response.Headers.ETag = record.QuotedETag;
            if (record.Parts is { } parts)
            {
                response.Headers["x-amz-mp-parts-count"] = parts.ToString(CultureInfo.InvariantCulture);
            }
        }

        response.ContentType = DefaultContentType;
        foreach (var (name, value) in record?.Headers ?? [])
        {
            response.Headers[name] = value;
        }

        foreach (var (name, value) in record?.Metadata ?? [])
        {
            response.Headers["x-amz-meta-" + name] = value;
        }

        if (!head)
        {
            // GET may override the stored headers through response-* parameters (presigned download links do).
            OverrideResponseHeaders(request, response);
        }

        if (head || length == 0)
        {
            return;
        }

        // Headers go out with the first bytes; until then a failure (the object was just deleted) still gets a
        // proper error response.
        await bucket.Job.GetAsync(key, response.Body, offset, length, GetFlags.None, progress: null, cancellationToken).ConfigureAwait(false);
    }

    private static void OverrideResponseHeaders(S3Request request, HttpResponse response)
    {
        (string Parameter, string Header)[] overrides =
        [
            ("response-content-type", "Content-Type"), ("response-content-language", "Content-Language"), ("response-expires", "Expires"),
            ("response-cache-control", "Cache-Control"), ("response-content-disposition", "Content-Disposition"), ("response-content-encoding", "Content-Encoding"),
        ];
        foreach (var (parameter, header) in overrides)
        {
            if (request.Get(parameter) is { } value)
            {
                response.Headers[header] = value;
            }
        }
    }

    /// <summary>The object's size (a lookup) and its record, fetched together; a record that disagrees with the object is ignored.</summary>
    private static async Task<(ObjectInfo? Info, ObjectRecord? Record)> LookupAsync(Bucket bucket, string key, CancellationToken cancellationToken)
    {
        var recordTask = GetRecordAsync(bucket.Job, key, cancellationToken);
        var info = await bucket.Job.LookupAsync(key, cancellationToken).ConfigureAwait(false);
        var record = await recordTask.ConfigureAwait(false);
        if (info is null)
        {
            return (null, null);
        }

        // An object written by the native client (or replaced by one) has no record, or one of an older object.
        return (info, record is not null && record.Size == info.Size ? record : null);
    }

    /// <summary>If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since; null to go on, else the status to answer.</summary>
    private static int? CheckConditions(S3Request request, ObjectRecord? record, DateTimeOffset modified)
    {
        var etag = record?.ETag;
        if (request.Header("If-Match") is { } ifMatch && etag is not null && !ETagListContains(ifMatch, etag))
        {
            return StatusCodes.Status412PreconditionFailed;
        }

        if (request.Header("If-Unmodified-Since") is { } unmodifiedSince && request.Header("If-Match") is null
            && TryHttpDate(unmodifiedSince, out var since) && modified > since.AddSeconds(1))
        {
            return StatusCodes.Status412PreconditionFailed;
        }

        if (request.Header("If-None-Match") is { } ifNoneMatch && etag is not null && ETagListContains(ifNoneMatch, etag))
        {
            return StatusCodes.Status304NotModified;
        }

        if (request.Header("If-Modified-Since") is { } modifiedSince && request.Header("If-None-Match") is null
            && TryHttpDate(modifiedSince, out var after) && modified < after.AddSeconds(1))
        {
            return StatusCodes.Status304NotModified;
        }

        return null;
    }

    private static bool ETagListContains(string list, string etag) =>
        list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Any(e => e == "*" || Unquote(e) == etag);

    private static bool TryHttpDate(string text, out DateTimeOffset time) =>
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time);

    /// <summary>
    /// One "bytes=first-last", "bytes=first-" or "bytes=-suffix" range, as S3 reads it. No header, or a form S3
    /// ignores (several ranges, other units), means the whole object.
    /// </summary>
    internal static (long Offset, long Length, bool Partial) ParseRange(string? header, long size)
    {
        if (header is null || !header.StartsWith("bytes=", StringComparison.OrdinalIgnoreCase) || header.Contains(',', StringComparison.Ordinal))
        {
            return (0, size, false);
        }

        var spec = header["bytes=".Length..].Trim();
        var dash = spec.IndexOf('-', StringComparison.Ordinal);
        if (dash < 0)
        {
            return (0, size, false);
        }

        var firstText = spec[..dash].Trim();
        var lastText = spec[(dash + 1)..].Trim();
        long first, last;
        if (firstText.Length == 0)
        {
            if (!long.TryParse(lastText, NumberStyles.None, CultureInfo.InvariantCulture, out var suffix))
            {
                return (0, size, false);
            }

            if (suffix == 0 || size == 0)
            {
                throw InvalidRange(size);
            }

            first = Math.Max(0, size - suffix);
            last = size - 1;
        }
        else
        {
            if (!long.TryParse(firstText, NumberStyles.None, CultureInfo.InvariantCulture, out first))
            {
                return (0, size, false);
            }

            if (lastText.Length == 0)
            {
                last = size - 1;
            }
            else if (!long.TryParse(lastText, NumberStyles.None, CultureInfo.InvariantCulture, out last) || last < first)
            {
                return (0, size, false);
            }

            if (first >= size)
            {
                throw InvalidRange(size);
            }

            last = Math.Min(last, size - 1);
        }

        return (first, last - first + 1, true);
    }

    /// <summary>
    /// GET/HEAD ?partNumber=N: the bytes of part N of a multipart object; part 1 of any other object is all of it,
    /// as on S3 (SDKs download large objects part by part this way).
    /// </summary>
    private static (long Offset, long Length, bool Partial) PartRange(string text, ObjectRecord? record, long size)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number < 1)
        {
            throw new S3Exception(S3Error.InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive.");
        }

        if (record?.PartSizes is not { } sizes)
        {
            return number == 1 ? (0, size, false) : throw new S3Exception(S3Error.InvalidPartNumber, "The requested partnumber is not satisfiable.");
        }

        if (number > sizes.Length)
        {
            throw new S3Exception(S3Error.InvalidPartNumber, "The requested partnumber is not satisfiable.");
        }

        var offset = sizes.Take(number - 1).Sum();
        return (offset, sizes[number - 1], true);
    }

    private static S3Exception InvalidRange(long size) =>
        new(S3Error.InvalidRange, "The requested range is not satisfiable.") { Details = [("ActualObjectSize", size.ToString(CultureInfo.InvariantCulture))] };

    private async Task DeleteObjectAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        string key;
        try
        {
            key = KeyMapping.ToPocket(request.Key!, _limits);
        }
        catch (S3Exception)
        {
            // No stored object can have this key; S3 answers deleting a missing key with success.
            request.Context.Response.StatusCode = StatusCodes.Status204NoContent;
            return;
        }

        await DeleteObjectAndRecordAsync(bucket.Job, key, request.Context.RequestAborted).ConfigureAwait(false);
        request.Context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    private async Task DeleteObjectsAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var root = S3Xml.Parse(await ReadSmallBodyAsync(request, auth).ConfigureAwait(false), "Delete");
        var quiet = string.Equals(root.ChildValue("Quiet"), "true", StringComparison.OrdinalIgnoreCase);
        var keys = root.Children("Object").Select(o => o.ChildValue("Key")).ToList();
        if (keys.Count is 0 or > 1000 || keys.Any(k => k is null))
        {
            throw new S3Exception(S3Error.MalformedXml, "The XML you provided was not well-formed or did not validate against our published schema: Delete needs 1 to 1000 Object elements, each with a Key.");
        }

        var results = new (string Key, S3Exception? Error)[keys.Count];
        await Parallel.ForAsync(0, keys.Count, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = request.Context.RequestAborted }, async (i, ct) =>
        {
            var key = keys[i]!;
            try
            {
                await DeleteObjectAndRecordAsync(bucket.Job, KeyMapping.ToPocket(key, _limits), ct).ConfigureAwait(false);
                results[i] = (key, null);
            }
            catch (S3Exception)
            {
                // A key Pocket cannot hold was never stored: deleting it succeeds, as for any missing key.
                results[i] = (key, null);
            }
            catch (PocketException ex) when (ex is not PocketUnauthorizedException)
            {
                results[i] = (key, new S3Exception(S3Error.InternalError, ex.Message));
            }
        }).ConfigureAwait(false);

        var xml = S3Xml.Document("DeleteResult", w =>
        {
            foreach (var (key, error) in results)
            {
                if (error is null)
                {
                    if (!quiet)
                    {
                        w.WriteStartElement("Deleted");
                        w.Element("Key", key);
                        w.WriteEndElement();
                    }
                }
                else
                {
                    w.WriteStartElement("Error");
                    w.Element("Key", key);
                    w.Element("Code", error.Error.Code);
                    w.Element("Message", error.Message);
                    w.WriteEndElement();
                }
            }
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    /// <summary>Parses x-amz-copy-source: "[/]bucket/key[?versionId=null]", URL-encoded.</summary>
    private async Task<(Bucket Bucket, string S3Key, string PocketKey)> CopySourceAsync(S3Request request, AuthResult auth)
    {
        var raw = request.Header("x-amz-copy-source")!;
        var question = raw.IndexOf('?', StringComparison.Ordinal);
        if (question >= 0)
        {
            var version = raw[(question + 1)..];
            if (version != "versionId=null" && version.Length > 0)
            {
                throw new S3Exception(S3Error.InvalidArgument, "Pocket keeps one version of each object: x-amz-copy-source may not name a versionId.");
            }

            raw = raw[..question];
        }

        var source = SigV4.PercentDecode(raw).TrimStart('/');
        var slash = source.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || slash == source.Length - 1)
        {
            throw new S3Exception(S3Error.InvalidArgument, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.");
        }

        var bucket = await RequireBucketAsync(source[..slash], auth).ConfigureAwait(false);
        var s3Key = source[(slash + 1)..];
        return (bucket, s3Key, KeyMapping.ToPocket(s3Key, _limits));
    }

    private async Task CopyObjectAsync(S3Request request, AuthResult auth)
    {
        var target = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var targetKey = KeyMapping.ToPocket(request.Key!, _limits);
        var (source, sourceS3Key, sourceKey) = await CopySourceAsync(request, auth).ConfigureAwait(false);
        var cancellationToken = request.Context.RequestAborted;
        var (info, record) = await LookupAsync(source, sourceKey, cancellationToken).ConfigureAwait(false);
        if (info is null)
        {
            throw S3Exception.NoSuchKey(sourceS3Key);
        }

        CheckCopySourceConditions(request, record, record?.Modified ?? source.Entry.Created);
        var replace = string.Equals(request.Header("x-amz-metadata-directive"), "REPLACE", StringComparison.OrdinalIgnoreCase);
        var (headers, metadata) = replace ? StoredHeadersOf(request) : (record?.Headers, record?.Metadata);
        var now = Clock.GetUtcNow();
        ObjectRecord result;
        if (ReferenceEquals(source, target) && sourceKey == targetKey)
        {
            // Copying onto itself can only change what the record says; the bytes stay (they are write-once anyway).
            if (!replace)
            {
                throw new S3Exception(S3Error.InvalidRequest, "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
            }

            var etag = record?.ETag ?? throw new S3Exception(S3Error.InvalidRequest, "This object has no gateway record (it was written by the native client), so its metadata cannot be replaced in place.");
            result = new ObjectRecord { ETag = etag, Size = info.Size, Modified = now, Headers = headers, Metadata = metadata, Parts = record.Parts };
        }
        else
        {
            if (info.Size > _options.MaxPutSize)
            {
                throw new S3Exception(S3Error.InvalidRequest, $"The specified copy source is larger than the maximum allowable size for a copy source: {_options.MaxPutSize}.");
            }

            await DeleteObjectAndRecordAsync(target.Job, targetKey, cancellationToken).ConfigureAwait(false);
            var md5 = await CopyBytesAsync(source, sourceKey, 0, info.Size, target, targetKey, cancellationToken).ConfigureAwait(false);
            result = new ObjectRecord { ETag = Md5Hex(md5), Size = info.Size, Modified = now, Headers = headers, Metadata = metadata };
        }

        await PutReplacingAsync(target.Job, KeyMapping.RecordKey(targetKey), result.Serialize(), cancellationToken).ConfigureAwait(false);
        var xml = S3Xml.Document("CopyObjectResult", w =>
        {
            w.Element("LastModified", S3Xml.Time(result.Modified));
            w.Element("ETag", result.QuotedETag);
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    /// <summary>Streams a byte range of one object into a new one through a bounded pipe; returns the MD5 of the bytes.</summary>
    private async Task<byte[]> CopyBytesAsync(Bucket source, string sourceKey, long offset, long length, Bucket target, string targetKey, CancellationToken cancellationToken)
    {
        try
        {
            return await PipeAsync(
                (writer, ct) => length == 0 ? Task.CompletedTask : source.Job.GetAsync(sourceKey, writer, offset, length, GetFlags.None, progress: null, ct),
                async (reader, ct) =>
                {
                    var content = new ContentStream(reader, length, length, expectedSha256: null, expectedMd5: null);
                    await using (content.ConfigureAwait(false))
                    {
                        await PutStreamAsync(target.Job, targetKey, content, length, ct).ConfigureAwait(false);
                        return content.Md5;
                    }
                },
                cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectExistsException)
        {
            throw new S3Exception(S3Error.OperationAborted, "A conflicting operation is in progress against the target key: another upload stored it first. Try again.");
        }
        catch (ObjectNotFoundException)
        {
            throw new S3Exception(S3Error.NoSuchKey, "The copy source was deleted while it was being copied.");
        }
    }

    private static void CheckCopySourceConditions(S3Request request, ObjectRecord? record, DateTimeOffset modified)
    {
        var etag = record?.ETag;
        var failed =
            (request.Header("x-amz-copy-source-if-match") is { } match && etag is not null && !ETagListContains(match, etag))
            || (request.Header("x-amz-copy-source-if-none-match") is { } noneMatch && etag is not null && ETagListContains(noneMatch, etag))
            || (request.Header("x-amz-copy-source-if-unmodified-since") is { } unmodified && TryHttpDate(unmodified, out var u) && modified > u.AddSeconds(1))
            || (request.Header("x-amz-copy-source-if-modified-since") is { } modifiedSince && TryHttpDate(modifiedSince, out var m) && modified < m.AddSeconds(1));
        if (failed)
        {
            throw new S3Exception(S3Error.PreconditionFailed, "At least one of the pre-conditions you specified did not hold.");
        }
    }
}
