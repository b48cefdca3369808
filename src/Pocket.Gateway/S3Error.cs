namespace Pocket.Gateway;

/// <summary>An S3 error code and the HTTP status S3 answers it with.</summary>
internal sealed record S3Error(string Code, int Status)
{
    public static readonly S3Error AccessDenied = new("AccessDenied", 403);
    public static readonly S3Error AuthorizationHeaderMalformed = new("AuthorizationHeaderMalformed", 400);
    public static readonly S3Error AuthorizationQueryParametersError = new("AuthorizationQueryParametersError", 400);
    public static readonly S3Error BadDigest = new("BadDigest", 400);
    public static readonly S3Error BucketAlreadyExists = new("BucketAlreadyExists", 409);
    public static readonly S3Error BucketAlreadyOwnedByYou = new("BucketAlreadyOwnedByYou", 409);
    public static readonly S3Error BucketNotEmpty = new("BucketNotEmpty", 409);
    public static readonly S3Error EntityTooLarge = new("EntityTooLarge", 400);
    public static readonly S3Error EntityTooSmall = new("EntityTooSmall", 400);
    public static readonly S3Error IncompleteBody = new("IncompleteBody", 400);
    public static readonly S3Error InternalError = new("InternalError", 500);
    public static readonly S3Error InsufficientStorage = new("InsufficientStorage", 507);
    public static readonly S3Error InvalidAccessKeyId = new("InvalidAccessKeyId", 403);
    public static readonly S3Error InvalidArgument = new("InvalidArgument", 400);
    public static readonly S3Error InvalidBucketName = new("InvalidBucketName", 400);
    public static readonly S3Error InvalidDigest = new("InvalidDigest", 400);
    public static readonly S3Error InvalidPart = new("InvalidPart", 400);
    public static readonly S3Error InvalidPartNumber = new("InvalidPartNumber", 416);
    public static readonly S3Error InvalidPartOrder = new("InvalidPartOrder", 400);
    public static readonly S3Error InvalidRange = new("InvalidRange", 416);
    public static readonly S3Error InvalidRequest = new("InvalidRequest", 400);
    public static readonly S3Error KeyTooLong = new("KeyTooLongError", 400);
    public static readonly S3Error MalformedXml = new("MalformedXML", 400);
    public static readonly S3Error MethodNotAllowed = new("MethodNotAllowed", 405);
    public static readonly S3Error MissingContentLength = new("MissingContentLength", 411);
    public static readonly S3Error NoSuchBucket = new("NoSuchBucket", 404);
    public static readonly S3Error NoSuchKey = new("NoSuchKey", 404);
    public static readonly S3Error NoSuchUpload = new("NoSuchUpload", 404);
    public static readonly S3Error NotImplemented = new("NotImplemented", 501);
    public static readonly S3Error OperationAborted = new("OperationAborted", 409);
    public static readonly S3Error PreconditionFailed = new("PreconditionFailed", 412);
    /// <summary>The bucket's job is past one of its quotas: the code and status Ceph RGW answers a bucket over its quota with.</summary>
    public static readonly S3Error QuotaExceeded = new("QuotaExceeded", 403);
    public static readonly S3Error RequestTimeTooSkewed = new("RequestTimeTooSkewed", 403);
    public static readonly S3Error ServiceUnavailable = new("ServiceUnavailable", 503);
    public static readonly S3Error SignatureDoesNotMatch = new("SignatureDoesNotMatch", 403);
    public static readonly S3Error ContentSha256Mismatch = new("XAmzContentSHA256Mismatch", 400);
}

/// <summary>Ends a request with an S3 error; the dispatcher turns it into S3's XML error document.</summary>
internal sealed class S3Exception(S3Error error, string message, Exception? inner = null) : Exception(message, inner)
{
    public S3Error Error { get; } = error;

    /// <summary>Extra elements of the error document, e.g. the string to sign of a signature mismatch.</summary>
    public IReadOnlyList<(string Name, string Value)> Details { get; init; } = [];

    public static S3Exception NoSuchBucket(string bucket) => new(S3Error.NoSuchBucket, $"The specified bucket does not exist: {bucket}");

    public static S3Exception NoSuchKey(string key) => new(S3Error.NoSuchKey, $"The specified key does not exist: {key}");

    public static S3Exception NoSuchUpload(string uploadId) =>
        new(S3Error.NoSuchUpload, $"The specified multipart upload does not exist (it may have been aborted or completed): {uploadId}");
}
