using System.Globalization;
using Microsoft.AspNetCore.Http;
using Pocket.Client;

namespace Pocket.Gateway;

/// <summary>
/// Multipart uploads. An upload is a folder of hidden Pocket objects: "info" (the target key and its headers) and,
/// per part, "p/NNNNN/d" (the bytes) plus an empty marker "p/NNNNN/m-MD5-MILLIS" written after the bytes, so one
/// listing tells each part's size, ETag and time, and a part without its marker is one still being written.
/// Completion streams the parts in order into the final object and then deletes the folder.
/// </summary>
internal sealed partial class S3Handler
{
    private sealed record StoredPart(int Number, long Size, string ETag, DateTimeOffset Modified, string DataKey);

    private async Task CreateMultipartUploadAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        KeyMapping.ToPocket(request.Key!, _limits);
        var uploadId = Guid.NewGuid().ToString("N");
        var (headers, metadata) = StoredHeadersOf(request);
        var info = new UploadRecord { Key = request.Key!, Initiated = Clock.GetUtcNow(), Headers = headers, Metadata = metadata };
        await bucket.Job.PutAsync(KeyMapping.UploadInfoKey(uploadId), info.Serialize(), PutFlags.None, request.Context.RequestAborted).ConfigureAwait(false);
        var xml = S3Xml.Document("InitiateMultipartUploadResult", w =>
        {
            w.Element("Bucket", bucket.Name);
            w.Element("Key", request.Key);
            w.Element("UploadId", uploadId);
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task UploadPartAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var (uploadId, _) = await RequireUploadAsync(request, bucket).ConfigureAwait(false);
        var partNumber = PartNumber(request);
        var cancellationToken = request.Context.RequestAborted;
        var (source, length) = OpenBody(request, auth, _options.MaxPartSize);
        await using (source.ConfigureAwait(false))
        {
            var folder = KeyMapping.PartFolder(uploadId, partNumber);

            // Uploading a part number again replaces the part.
            await DeleteQuietlyAsync(bucket.Job, folder, recursive: true, cancellationToken).ConfigureAwait(false);
            try
            {
                await PutStreamAsync(bucket.Job, folder + "d", source, length, cancellationToken).ConfigureAwait(false);
            }
            catch (ObjectExistsException)
            {
                throw new S3Exception(S3Error.OperationAborted, $"Part {partNumber} is being uploaded by another request. Try again.");
            }

            var etag = Md5Hex(source.Md5);
            await PutMarkerAsync(bucket.Job, folder, etag, cancellationToken).ConfigureAwait(false);
            request.Context.Response.Headers.ETag = "\"" + etag + "\"";
            request.Context.Response.StatusCode = StatusCodes.Status200OK;
            request.Context.Response.ContentLength = 0;
        }
    }

    private async Task UploadPartCopyAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var (uploadId, _) = await RequireUploadAsync(request, bucket).ConfigureAwait(false);
        var partNumber = PartNumber(request);
        var cancellationToken = request.Context.RequestAborted;
        var (source, sourceS3Key, sourceKey) = await CopySourceAsync(request, auth).ConfigureAwait(false);
        var (info, record) = await LookupAsync(source, sourceKey, cancellationToken).ConfigureAwait(false);
        if (info is null)
        {
            throw S3Exception.NoSuchKey(sourceS3Key);
        }

        CheckCopySourceConditions(request, record, record?.Modified ?? source.Entry.Created);
        long offset = 0, length = info.Size;
        if (request.Header("x-amz-copy-source-range") is { } range)
        {
            var (o, l, partial) = ParseRange(range, info.Size);
            if (!partial)
            {
                throw new S3Exception(S3Error.InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy.");
            }

            (offset, length) = (o, l);
        }

        if (length > _options.MaxPartSize)
        {
            throw new S3Exception(S3Error.EntityTooLarge, $"A part may hold at most {_options.MaxPartSize} bytes.");
        }

        var folder = KeyMapping.PartFolder(uploadId, partNumber);
        await DeleteQuietlyAsync(bucket.Job, folder, recursive: true, cancellationToken).ConfigureAwait(false);
        var etag = Md5Hex(await CopyBytesAsync(source, sourceKey, offset, length, bucket, folder + "d", cancellationToken).ConfigureAwait(false));
        var modified = await PutMarkerAsync(bucket.Job, folder, etag, cancellationToken).ConfigureAwait(false);
        var xml = S3Xml.Document("CopyPartResult", w =>
        {
            w.Element("LastModified", S3Xml.Time(modified));
            w.Element("ETag", "\"" + etag + "\"");
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task<DateTimeOffset> PutMarkerAsync(PocketJob job, string folder, string etag, CancellationToken cancellationToken)
    {
        var now = Clock.GetUtcNow();
        var marker = $"{folder}m-{etag}-{now.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)}";
        await job.PutAsync(marker, ReadOnlyMemory<byte>.Empty, PutFlags.None, cancellationToken).ConfigureAwait(false);
        return now;
    }

    private async Task CompleteMultipartUploadAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var (uploadId, upload) = await RequireUploadAsync(request, bucket).ConfigureAwait(false);
        var key = KeyMapping.ToPocket(request.Key!, _limits);
        var cancellationToken = request.Context.RequestAborted;
        var root = S3Xml.Parse(await ReadSmallBodyAsync(request, auth).ConfigureAwait(false), "CompleteMultipartUpload");
        var requested = new List<(int Number, string ETag)>();
        foreach (var part in root.Children("Part"))
        {
            if (!int.TryParse(part.ChildValue("PartNumber"), NumberStyles.None, CultureInfo.InvariantCulture, out var number) || part.ChildValue("ETag") is not { } etag)
            {
                throw new S3Exception(S3Error.MalformedXml, "The XML you provided was not well-formed or did not validate against our published schema: each Part needs a PartNumber and an ETag.");
            }

            requested.Add((number, Unquote(etag)));
        }

        if (requested.Count == 0)
        {
            throw new S3Exception(S3Error.MalformedXml, "The XML you provided was not well-formed or did not validate against our published schema: at least one Part is needed.");
        }

        for (var i = 1; i < requested.Count; i++)
        {
            if (requested[i].Number <= requested[i - 1].Number)
            {
                throw new S3Exception(S3Error.InvalidPartOrder, "The list of parts was not in ascending order. The parts list must be specified in order of the part number.");
            }
        }

        var stored = (await ListStoredPartsAsync(bucket.Job, uploadId, cancellationToken).ConfigureAwait(false)).ToDictionary(p => p.Number);
        var parts = new List<StoredPart>(requested.Count);
        foreach (var (number, etag) in requested)
        {
            if (!stored.TryGetValue(number, out var part) || part.ETag != etag)
            {
                throw new S3Exception(S3Error.InvalidPart, $"One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag: part {number}.");
            }

            parts.Add(part);
        }

        for (var i = 0; i < parts.Count - 1; i++)
        {
            if (parts[i].Size < _options.MinPartSize)
            {
                throw new S3Exception(S3Error.EntityTooSmall, $"Your proposed upload is smaller than the minimum allowed object size: part {parts[i].Number} has {parts[i].Size} bytes, and every part but the last needs at least {_options.MinPartSize}.");
            }
        }

        var total = parts.Sum(p => p.Size);
        await DeleteObjectAndRecordAsync(bucket.Job, key, cancellationToken).ConfigureAwait(false);
        try
        {
            await PipeAsync(
                async (writer, ct) =>
                {
                    foreach (var part in parts)
                    {
                        if (part.Size > 0)
                        {
                            await bucket.Job.GetAsync(part.DataKey, writer, 0, part.Size, GetFlags.None, progress: null, ct).ConfigureAwait(false);
                        }
                    }
                },
                async (reader, ct) =>
                {
                    var content = new ContentStream(reader, total, total, expectedSha256: null, expectedMd5: null);
                    await using (content.ConfigureAwait(false))
                    {
                        await PutStreamAsync(bucket.Job, key, content, total, ct).ConfigureAwait(false);
                        return true;
                    }
                },
                cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectExistsException)
        {
            throw new S3Exception(S3Error.OperationAborted, "A conflicting operation is in progress against this key: another upload stored it first. Try again.");
        }
        catch (ObjectNotFoundException)
        {
            throw S3Exception.NoSuchUpload(uploadId);
        }

        var record = new ObjectRecord
        {
            ETag = MultipartETag([.. parts.Select(p => Convert.FromHexString(p.ETag))]),
            Size = total,
            Modified = Clock.GetUtcNow(),
            Headers = upload.Headers,
            Metadata = upload.Metadata,
            Parts = parts.Count,
            PartSizes = [.. parts.Select(p => p.Size)],
        };
        await PutReplacingAsync(bucket.Job, KeyMapping.RecordKey(key), record.Serialize(), cancellationToken).ConfigureAwait(false);
        await DeleteUploadAsync(bucket, uploadId).ConfigureAwait(false);
        GatewayLog.MultipartCompleted(_logger, uploadId, bucket.Name, request.Key!, parts.Count, total);

        var location = $"{request.Context.Request.Scheme}://{request.Context.Request.Host}/{bucket.Name}/{SigV4.UriEncode(request.Key!, keepSlash: true)}";
        var xml = S3Xml.Document("CompleteMultipartUploadResult", w =>
        {
            w.Element("Location", location);
            w.Element("Bucket", bucket.Name);
            w.Element("Key", request.Key);
            w.Element("ETag", record.QuotedETag);
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task AbortMultipartUploadAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var (uploadId, _) = await RequireUploadAsync(request, bucket).ConfigureAwait(false);
        await bucket.Job.DeleteAsync(KeyMapping.UploadRoot(uploadId), recursive: true, request.Context.RequestAborted).ConfigureAwait(false);
        request.Context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    private async Task ListPartsAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var (uploadId, _) = await RequireUploadAsync(request, bucket).ConfigureAwait(false);
        var maxParts = 1000;
        if (request.Get("max-parts") is { } maxText && (!int.TryParse(maxText, NumberStyles.None, CultureInfo.InvariantCulture, out maxParts) || maxParts < 0))
        {
            throw new S3Exception(S3Error.InvalidArgument, "max-parts must be a whole number >= 0.");
        }

        maxParts = Math.Min(maxParts, 1000);
        var marker = 0;
        if (request.Get("part-number-marker") is { } markerText && !int.TryParse(markerText, NumberStyles.None, CultureInfo.InvariantCulture, out marker))
        {
            throw new S3Exception(S3Error.InvalidArgument, "part-number-marker must be a whole number.");
        }

        var all = (await ListStoredPartsAsync(bucket.Job, uploadId, request.Context.RequestAborted).ConfigureAwait(false)).Where(p => p.Number > marker).ToList();
        var page = all.Take(maxParts).ToList();
        var truncated = all.Count > page.Count;
        var xml = S3Xml.Document("ListPartsResult", w =>
        {
            w.Element("Bucket", bucket.Name);
            w.Element("Key", request.Key);
            w.Element("UploadId", uploadId);
            w.Element("PartNumberMarker", marker);
            w.Element("NextPartNumberMarker", page.Count > 0 ? page[^1].Number : marker);
            w.Element("MaxParts", maxParts);
            w.Element("IsTruncated", truncated);
            WriteOwner(w, "Initiator");
            WriteOwner(w, "Owner");
            w.Element("StorageClass", "STANDARD");
            foreach (var part in page)
            {
                w.WriteStartElement("Part");
                w.Element("PartNumber", part.Number);
                w.Element("LastModified", S3Xml.Time(part.Modified));
                w.Element("ETag", "\"" + part.ETag + "\"");
                w.Element("Size", part.Size);
                w.WriteEndElement();
            }
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private async Task ListMultipartUploadsAsync(S3Request request, AuthResult auth)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var prefix = request.Get("prefix") ?? string.Empty;
        var cancellationToken = request.Context.RequestAborted;
        var uploads = new List<(string Id, UploadRecord Info)>();
        var truncated = false;
        await foreach (var entry in bucket.Job.ListAsync(KeyMapping.UploadPrefix, delimited: true, pageSize: 1000, cancellationToken).ConfigureAwait(false))
        {
            if (!entry.IsPrefix)
            {
                continue;
            }

            var id = entry.Key[KeyMapping.UploadPrefix.Length..^1];
            if (await GetUploadAsync(bucket.Job, id, cancellationToken).ConfigureAwait(false) is not { } info || !info.Key.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }

            if (uploads.Count == MaxListKeys)
            {
                truncated = true;
                break;
            }

            uploads.Add((id, info));
        }

        uploads.Sort((a, b) => string.CompareOrdinal(a.Info.Key, b.Info.Key) is var c && c != 0 ? c : a.Info.Initiated.CompareTo(b.Info.Initiated));
        var xml = S3Xml.Document("ListMultipartUploadsResult", w =>
        {
            w.Element("Bucket", bucket.Name);
            w.Element("KeyMarker", string.Empty);
            w.Element("UploadIdMarker", string.Empty);
            w.Element("Prefix", prefix);
            w.Element("MaxUploads", MaxListKeys);
            w.Element("IsTruncated", truncated);
            foreach (var (id, info) in uploads)
            {
                w.WriteStartElement("Upload");
                w.Element("Key", info.Key);
                w.Element("UploadId", id);
                WriteOwner(w, "Initiator");
                WriteOwner(w, "Owner");
                w.Element("StorageClass", "STANDARD");
                w.Element("Initiated", S3Xml.Time(info.Initiated));
                w.WriteEndElement();
            }
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private static void WriteOwner(System.Xml.XmlWriter w, string element)
    {
        w.WriteStartElement(element);
        w.Element("ID", OwnerId);
        w.Element("DisplayName", OwnerId);
        w.WriteEndElement();
    }

    /// <summary>The upload named by ?uploadId, which must exist and belong to the request's key.</summary>
    private async Task<(string UploadId, UploadRecord Info)> RequireUploadAsync(S3Request request, Bucket bucket)
    {
        var uploadId = request.Get("uploadId") ?? string.Empty;
        if (uploadId.Length != 32 || !uploadId.All(char.IsAsciiHexDigitLower))
        {
            throw S3Exception.NoSuchUpload(uploadId);
        }

        var info = await GetUploadAsync(bucket.Job, uploadId, request.Context.RequestAborted).ConfigureAwait(false);
        return info is not null && info.Key == request.Key ? (uploadId, info) : throw S3Exception.NoSuchUpload(uploadId);
    }

    private static async Task<UploadRecord?> GetUploadAsync(PocketJob job, string uploadId, CancellationToken cancellationToken) =>
        await GetSmallAsync(job, KeyMapping.UploadInfoKey(uploadId), cancellationToken).ConfigureAwait(false) is { } bytes ? UploadRecord.TryParse(bytes) : null;

    private int PartNumber(S3Request request) =>
        int.TryParse(request.Get("partNumber"), NumberStyles.None, CultureInfo.InvariantCulture, out var number) && number >= 1 && number <= _options.MaxParts
            ? number
            : throw new S3Exception(S3Error.InvalidArgument, $"Part number must be an integer between 1 and {_options.MaxParts}, inclusive.");

    /// <summary>The parts whose bytes and marker are both stored, in part order.</summary>
    private static async Task<List<StoredPart>> ListStoredPartsAsync(PocketJob job, string uploadId, CancellationToken cancellationToken)
    {
        var prefix = KeyMapping.PartsPrefix(uploadId);
        var sizes = new Dictionary<int, (long Size, string Key)>();
        var markers = new Dictionary<int, (string ETag, DateTimeOffset Modified)>();
        await foreach (var entry in job.ListAsync(prefix, delimited: false, pageSize: 1000, cancellationToken).ConfigureAwait(false))
        {
            // "NNNNN/d" or "NNNNN/m-MD5-MILLIS"
            var rest = entry.Key[prefix.Length..];
            var slash = rest.IndexOf('/', StringComparison.Ordinal);
            if (slash < 0 || !int.TryParse(rest.AsSpan(0, slash), NumberStyles.None, CultureInfo.InvariantCulture, out var number))
            {
                continue;
            }

            var name = rest[(slash + 1)..];
            if (name == "d")
            {
                sizes[number] = (entry.Size, entry.Key);
            }
            else if (name.StartsWith("m-", StringComparison.Ordinal) && name.Length > 2 + 32 + 1
                && long.TryParse(name.AsSpan(2 + 32 + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var millis))
            {
                markers[number] = (name.Substring(2, 32), DateTimeOffset.FromUnixTimeMilliseconds(millis));
            }
        }

        return [.. sizes
            .Where(s => markers.ContainsKey(s.Key))
            .Select(s => new StoredPart(s.Key, s.Value.Size, markers[s.Key].ETag, markers[s.Key].Modified, s.Value.Key))
            .OrderBy(p => p.Number)];
    }

    /// <summary>Deletes an upload's folder; a failure only leaves hidden parts behind until the bucket is deleted.</summary>
    private async Task DeleteUploadAsync(Bucket bucket, string uploadId)
    {
        try
        {
            await bucket.Job.DeleteAsync(KeyMapping.UploadRoot(uploadId), recursive: true, CancellationToken.None).ConfigureAwait(false);
        }
        catch (PocketException ex)
        {
            GatewayLog.CleanupFailed(_logger, "upload " + uploadId, bucket.Name, ex.Message);
        }
    }
}
