using System.Text;
using Pocket.Protocol;

namespace Pocket.Gateway;

/// <summary>
/// How S3 keys become Pocket keys, and where the gateway keeps its own records inside a bucket's job.
/// <para>
/// Pocket keys are '/'-separated with no empty, '.' or '..' part. S3 keys are any UTF-8 string, so the gateway maps
/// the one common case Pocket cannot hold, a "folder marker" ending in '/' (written by consoles and Hadoop's s3a), to
/// the key plus a final part U+FFFF, and refuses the rest (leading '/', "a//b", "./", control characters) with
/// InvalidArgument.
/// </para>
/// <para>
/// The gateway's records live under the first part U+FFFF: it is the largest UTF-16 code unit, so the records sort
/// after every user key and a listing of the bucket can stop at the first record instead of reading past them all.
/// Keys containing U+FFFF are therefore reserved.
/// </para>
/// </summary>
internal static class KeyMapping
{
    public const char Reserved = '\uffff';

    /// <summary>Root of the gateway's records: object records ("m/KEY") and multipart uploads ("u/ID/...").</summary>
    public const string RecordRoot = "\uffff/";

    public const string RecordPrefix = "\uffff/m/";

    public const string UploadPrefix = "\uffff/u/";

    private const string FolderSuffix = "/\uffff";

    private static readonly int RecordPrefixBytes = Encoding.UTF8.GetByteCount(RecordPrefix);

    /// <summary>The Pocket key of an S3 key; throws InvalidArgument or KeyTooLongError for keys Pocket cannot hold.</summary>
    public static string ToPocket(string s3Key, ProtocolLimits limits)
    {
        if (s3Key.Length == 0)
        {
            throw new S3Exception(S3Error.InvalidArgument, "The key is empty.");
        }

        if (s3Key.Contains(Reserved, StringComparison.Ordinal))
        {
            throw new S3Exception(S3Error.InvalidArgument, "Keys may not contain U+FFFF: the gateway reserves it for its own records.");
        }

        var key = s3Key.EndsWith('/') ? s3Key[..^1] + FolderSuffix : s3Key;

        // The object record of a key sits at RecordPrefix + key, so that must fit the limits too.
        if (Encoding.UTF8.GetByteCount(key) + RecordPrefixBytes > limits.MaxKeyBytes)
        {
            throw new S3Exception(S3Error.KeyTooLong, $"Your key is too long: this gateway takes keys of at most {limits.MaxKeyBytes - RecordPrefixBytes} UTF-8 bytes (a key ending in '/' counts 3 more).");
        }

        if (!ObjectKey.IsValid(key, limits, out var error))
        {
            throw new S3Exception(S3Error.InvalidArgument, $"Pocket cannot store this key: {error}. Keys are '/'-separated parts; a part may not be empty, '.' or '..' (so no leading '/' and no '//'), and control characters are not allowed.");
        }

        if (key.Count(c => c == '/') + 1 + 2 > limits.MaxKeyComponents)
        {
            throw new S3Exception(S3Error.KeyTooLong, $"Your key has too many '/'-separated parts: this gateway takes at most {limits.MaxKeyComponents - 2}.");
        }

        return key;
    }

    /// <summary>The S3 key of a Pocket key the gateway listed.</summary>
    public static string ToS3(string pocketKey) =>
        pocketKey.EndsWith(FolderSuffix, StringComparison.Ordinal) ? pocketKey[..^1] : pocketKey;

    /// <summary>True for keys and listing entries that belong to the gateway, not the user.</summary>
    public static bool IsRecord(string pocketKey) => pocketKey.Length > 0 && pocketKey[0] == Reserved;

    /// <summary>Where the record (ETag, type, metadata) of an object lives.</summary>
    public static string RecordKey(string pocketKey) => RecordPrefix + pocketKey;

    /// <summary>The folder of one multipart upload.</summary>
    public static string UploadRoot(string uploadId) => UploadPrefix + uploadId + "/";

    public static string UploadInfoKey(string uploadId) => UploadRoot(uploadId) + "info";

    public static string PartsPrefix(string uploadId) => UploadRoot(uploadId) + "p/";

    /// <summary>A part's folder; the part is stored one level down under its MD5, so one listing gives number, size and ETag.</summary>
    public static string PartFolder(string uploadId, int partNumber) => PartsPrefix(uploadId) + partNumber.ToString("D5", System.Globalization.CultureInfo.InvariantCulture) + "/";

    /// <summary>
    /// The prefix Pocket can list for an S3 prefix: the S3 prefix itself when Pocket accepts it, otherwise its part up
    /// to the last '/' (the caller filters the rest). Null when no stored key can match.
    /// </summary>
    public static string? ListablePrefix(string s3Prefix, ProtocolLimits limits)
    {
        if (s3Prefix.Length == 0)
        {
            return string.Empty;
        }

        if (s3Prefix.Contains(Reserved, StringComparison.Ordinal) || s3Prefix[0] == '/')
        {
            return null;
        }

        if (ObjectKey.IsValidPrefix(s3Prefix, limits, out _))
        {
            return s3Prefix;
        }

        var slash = s3Prefix.LastIndexOf('/');
        if (slash < 0)
        {
            return string.Empty;
        }

        var folder = s3Prefix[..(slash + 1)];
        return ObjectKey.IsValidPrefix(folder, limits, out _) ? folder : null;
    }
}
