using System.Globalization;
using System.Text;
using System.Xml;
using Pocket.Client;

namespace Pocket.Gateway;

/// <summary>
/// ListObjects (V1) and ListObjectsV2. Pocket lists keys in order with an optional '/' fold; other delimiters are
/// folded here. Continuation tokens name the last Pocket key (or folded prefix) returned.
/// </summary>
internal sealed partial class S3Handler
{
    private const int MaxListKeys = 1000;

    private sealed record ListedObject(string Key, string PocketKey, long Size)
    {
        public ObjectRecord? Record { get; set; }
    }

    private sealed record ListPage(List<ListedObject> Objects, List<string> Prefixes, bool Truncated, string? NextToken, string? LastS3Key);

    private async Task ListObjectsAsync(S3Request request, AuthResult auth, bool v2)
    {
        var bucket = await RequireBucketAsync(request.Bucket!, auth).ConfigureAwait(false);
        var prefix = request.Get("prefix") ?? string.Empty;
        var delimiter = request.Get("delimiter");
        if (delimiter?.Length == 0)
        {
            delimiter = null;
        }

        var maxKeys = MaxListKeys;
        if (request.Get("max-keys") is { } maxText && (!int.TryParse(maxText, NumberStyles.None, CultureInfo.InvariantCulture, out maxKeys) || maxKeys < 0))
        {
            throw new S3Exception(S3Error.InvalidArgument, "max-keys must be a whole number >= 0.");
        }

        maxKeys = Math.Min(maxKeys, MaxListKeys);
        var urlEncoding = request.Get("encoding-type") is { } encodingType
            ? encodingType == "url" ? true : throw new S3Exception(S3Error.InvalidArgument, "Invalid Encoding Method specified in Request: only 'url' is supported.")
            : false;

        string? afterPocket = null;
        var afterIsPrefix = false;
        string? startAfter;
        string? continuation = null;
        if (v2)
        {
            startAfter = request.Get("start-after");
            continuation = request.Get("continuation-token");
            if (continuation is not null)
            {
                (afterPocket, afterIsPrefix) = DecodeToken(continuation);
            }
        }
        else
        {
            startAfter = request.Get("marker");
        }

        var page = await ListPageAsync(bucket.Job, prefix, delimiter, maxKeys, afterPocket, afterIsPrefix, startAfter, request.Context.RequestAborted).ConfigureAwait(false);
        await FillRecordsAsync(bucket.Job, page.Objects, request.Context.RequestAborted).ConfigureAwait(false);

        string Encode(string value) => urlEncoding ? SigV4.UriEncode(value, keepSlash: true) : value;
        var xml = S3Xml.Document("ListBucketResult", w =>
        {
            w.Element("Name", bucket.Name);
            w.Element("Prefix", Encode(prefix));
            if (v2)
            {
                w.Element("StartAfter", startAfter is null ? null : Encode(startAfter));
                w.Element("ContinuationToken", continuation);
                w.Element("NextContinuationToken", page.NextToken);
                w.Element("KeyCount", page.Objects.Count + page.Prefixes.Count);
            }
            else
            {
                w.Element("Marker", Encode(startAfter ?? string.Empty));
                w.Element("NextMarker", page.Truncated && page.LastS3Key is not null ? Encode(page.LastS3Key) : null);
            }

            w.Element("MaxKeys", maxKeys);
            w.Element("Delimiter", delimiter is null ? null : Encode(delimiter));
            w.Element("EncodingType", urlEncoding ? "url" : null);
            w.Element("IsTruncated", page.Truncated);
            foreach (var item in page.Objects)
            {
                WriteContents(w, item, bucket, Encode(item.Key));
            }

            foreach (var commonPrefix in page.Prefixes)
            {
                w.WriteStartElement("CommonPrefixes");
                w.Element("Prefix", Encode(commonPrefix));
                w.WriteEndElement();
            }
        });
        await WriteXmlAsync(request.Context, xml).ConfigureAwait(false);
    }

    private static void WriteContents(XmlWriter w, ListedObject item, Bucket bucket, string key)
    {
        w.WriteStartElement("Contents");
        w.Element("Key", key);
        w.Element("LastModified", S3Xml.Time(item.Record?.Modified ?? bucket.Entry.Created));
        w.Element("ETag", item.Record?.QuotedETag);
        w.Element("Size", item.Size);
        w.Element("StorageClass", "STANDARD");
        w.WriteEndElement();
    }

    /// <summary>
    /// One page of a listing. Pocket's listing starts after the continuation point or start-after (whichever is
    /// later), so a deep page does not re-read the keys before it; the filters below still apply, since a Pocket key
    /// at or before that point always maps to an entry they skip (an S3 key or folded prefix is a prefix of its
    /// Pocket key). The listing stops at the gateway's records, which sort last.
    /// </summary>
    private async Task<ListPage> ListPageAsync(PocketJob job, string prefix, string? delimiter, int maxKeys, string? afterPocket, bool afterIsPrefix, string? startAfter, CancellationToken cancellationToken)
    {
        var objects = new List<ListedObject>();
        var prefixes = new List<string>();
        var pocketPrefix = KeyMapping.ListablePrefix(prefix, _limits);
        if (pocketPrefix is null || maxKeys == 0)
        {
            return new ListPage(objects, prefixes, false, null, null);
        }

        // Pocket folds at '/' itself, which skips a folder's keys instead of reading them all.
        var pocketFolds = delimiter == "/";
        string? lastPosition = null;
        var lastIsPrefix = false;
        string? lastS3Key = null;
        string? lastFolded = null;
        var truncated = false;
        var seek = afterPocket is not null && (startAfter is null || string.CompareOrdinal(afterPocket, startAfter) > 0) ? afterPocket : startAfter;
        await foreach (var entry in job.ListAsync(pocketPrefix, seek, pocketFolds, pageSize: 1000, cancellationToken).ConfigureAwait(false))
        {
            if (KeyMapping.IsRecord(entry.Key))
            {
                break;
            }

            var s3Key = entry.IsPrefix ? entry.Key : KeyMapping.ToS3(entry.Key);
            if (!s3Key.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }

            // Position of this entry in Pocket's order: a folded prefix stands for every key under it.
            var position = entry.Key;
            var isPrefix = entry.IsPrefix;
            if (!isPrefix && delimiter is not null && !pocketFolds)
            {
                var cut = s3Key.IndexOf(delimiter, prefix.Length, StringComparison.Ordinal);
                if (cut >= 0)
                {
                    position = s3Key[..(cut + delimiter.Length)];
                    isPrefix = true;
                }
            }

            if (afterPocket is not null && (string.CompareOrdinal(position, afterPocket) <= 0 || (afterIsPrefix && position.StartsWith(afterPocket, StringComparison.Ordinal))))
            {
                continue;
            }

            if (startAfter is not null && string.CompareOrdinal(s3Key, startAfter) <= 0)
            {
                continue;
            }

            if (isPrefix && position == lastFolded)
            {
                continue;
            }

            if (objects.Count + prefixes.Count == maxKeys)
            {
                truncated = true;
                break;
            }

            if (isPrefix)
            {
                prefixes.Add(position);
                lastFolded = position;
                lastS3Key = position;
            }
            else
            {
                objects.Add(new ListedObject(s3Key, entry.Key, entry.Size));
                lastS3Key = s3Key;
            }

            lastPosition = position;
            lastIsPrefix = isPrefix;
        }

        var next = truncated && lastPosition is not null ? EncodeToken(lastPosition, lastIsPrefix) : null;
        return new ListPage(objects, prefixes, truncated, next, lastS3Key);
    }

    /// <summary>Reads the records of a page's objects in parallel (each is one inline round trip) for their ETags and dates.</summary>
    private async Task FillRecordsAsync(PocketJob job, List<ListedObject> objects, CancellationToken cancellationToken)
    {
        await Parallel.ForEachAsync(objects, new ParallelOptions { MaxDegreeOfParallelism = _options.ListRecordParallelism, CancellationToken = cancellationToken }, async (item, ct) =>
        {
            var record = await GetRecordAsync(job, item.PocketKey, ct).ConfigureAwait(false);
            item.Record = record is not null && record.Size == item.Size ? record : null;
        }).ConfigureAwait(false);
    }

    private static string EncodeToken(string position, bool isPrefix) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes((isPrefix ? "P" : "K") + position));

    private static (string Position, bool IsPrefix) DecodeToken(string token)
    {
        try
        {
            var text = Encoding.UTF8.GetString(Convert.FromBase64String(token));
            if (text.Length >= 2 && text[0] is 'P' or 'K')
            {
                return (text[1..], text[0] == 'P');
            }
        }
        catch (FormatException)
        {
        }

        throw new S3Exception(S3Error.InvalidArgument, "The continuation token provided is incorrect.");
    }
}
