using System.Text.Json;
using System.Text.Json.Serialization;

namespace Pocket.Gateway;

/// <summary>
/// What S3 knows about an object beyond its bytes: ETag, time, content type, user metadata. Kept as a small JSON
/// object at <see cref="KeyMapping.RecordKey"/> (small enough to live inline on the metadata server, so reading it
/// is one round trip). The ETag is computed while the upload streams through, which is why it cannot be a header of
/// the object itself: it is known only after the last byte.
/// </summary>
internal sealed record ObjectRecord
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Response headers S3 stores with an object and returns on GET and HEAD.</summary>
    public static readonly string[] StoredHeaders = ["Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires"];

    /// <summary>The ETag without quotes: MD5 hex, or "md5-of-part-md5s-N" for multipart uploads.</summary>
    public required string ETag { get; init; }

    public required long Size { get; init; }

    public required DateTimeOffset Modified { get; init; }

    /// <summary>Stored headers by their canonical name (Content-Type, ...).</summary>
    public Dictionary<string, string>? Headers { get; init; }

    /// <summary>User metadata: x-amz-meta-NAME values by lower-case NAME.</summary>
    public Dictionary<string, string>? Metadata { get; init; }

    /// <summary>Number of parts for multipart objects.</summary>
    public int? Parts { get; init; }

    /// <summary>Sizes of the parts of a multipart object, in order, so GET ?partNumber=N can answer with one part.</summary>
    public long[]? PartSizes { get; init; }

    public string QuotedETag => "\"" + ETag + "\"";

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public static ObjectRecord? TryParse(ReadOnlySpan<byte> json)
    {
        try
        {
            return JsonSerializer.Deserialize<ObjectRecord>(json, Json);
        }
        catch (JsonException)
        {
            // A record the gateway did not write (or a damaged one) is as good as none: the object still reads.
            return null;
        }
    }
}

/// <summary>What CreateMultipartUpload remembers until the upload is completed or aborted.</summary>
internal sealed record UploadRecord
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>The S3 key the upload will become.</summary>
    public required string Key { get; init; }

    public required DateTimeOffset Initiated { get; init; }

    public Dictionary<string, string>? Headers { get; init; }

    public Dictionary<string, string>? Metadata { get; init; }

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public static UploadRecord? TryParse(ReadOnlySpan<byte> json)
    {
        try
        {
            return JsonSerializer.Deserialize<UploadRecord>(json, Json);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
