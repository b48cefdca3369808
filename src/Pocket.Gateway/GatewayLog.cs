using Microsoft.Extensions.Logging;

namespace Pocket.Gateway;

/// <summary>Every log line of the S3 gateway, with fixed event ids (500-549) so operators can filter on them.</summary>
internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 500, Level = LogLevel.Information, Message = "S3 gateway listening on {Url}, controller {Controller}, metadata server {Metadata}")]
    public static partial void Listening(ILogger logger, string url, string controller, string metadata);

    [LoggerMessage(EventId = 501, Level = LogLevel.Information, Message = "bucket {Bucket} created as job {JobId} by {AccessKey}")]
    public static partial void BucketCreated(ILogger logger, string bucket, string jobId, string accessKey);

    [LoggerMessage(EventId = 502, Level = LogLevel.Information, Message = "bucket {Bucket} deleted, job {JobId} deregistered")]
    public static partial void BucketDeleted(ILogger logger, string bucket, string jobId);

    [LoggerMessage(EventId = 503, Level = LogLevel.Warning, Message = "bucket {Bucket} is gone: job {JobId} no longer answers to its token (deregistered, or its lease ran out)")]
    public static partial void BucketGone(ILogger logger, string bucket, string jobId);

    [LoggerMessage(EventId = 504, Level = LogLevel.Information, Message = "bucket map {Path} loaded: {Count} buckets, {Dropped} dropped")]
    public static partial void StateLoaded(ILogger logger, string path, int count, int dropped);

    [LoggerMessage(EventId = 505, Level = LogLevel.Debug, Message = "{Method} {Path} refused: {Code} {Message}")]
    public static partial void RequestRefused(ILogger logger, string method, string path, string code, string message);

    [LoggerMessage(EventId = 506, Level = LogLevel.Error, Message = "{Method} {Path} failed")]
    public static partial void RequestFailed(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(EventId = 507, Level = LogLevel.Warning, Message = "{Method} {Path} failed in Pocket: {Code} {Message}")]
    public static partial void PocketFailed(ILogger logger, string method, string path, string code, string message);

    [LoggerMessage(EventId = 508, Level = LogLevel.Warning, Message = "the controller did not know job {JobId} of bucket {Bucket}; {Outcome}")]
    public static partial void ControllerForgotJob(ILogger logger, string jobId, string bucket, string outcome);

    [LoggerMessage(EventId = 509, Level = LogLevel.Warning, Message = "clean-up of {Key} in bucket {Bucket} failed: {Reason}")]
    public static partial void CleanupFailed(ILogger logger, string key, string bucket, string reason);

    [LoggerMessage(EventId = 510, Level = LogLevel.Information, Message = "multipart upload {UploadId} completed: {Bucket}/{Key}, {Parts} parts, {Bytes} bytes")]
    public static partial void MultipartCompleted(ILogger logger, string uploadId, string bucket, string key, int parts, long bytes);

    [LoggerMessage(EventId = 511, Level = LogLevel.Warning, Message = "{Method} {Path}: the response had started when the request failed ({Reason}); connection aborted")]
    public static partial void AbortedMidResponse(ILogger logger, string method, string path, string reason);

    [LoggerMessage(EventId = 512, Level = LogLevel.Information, Message = "job {JobId} adopted as the bucket of that name: registered elsewhere, its token came from the controller")]
    public static partial void JobAdopted(ILogger logger, string jobId);

    [LoggerMessage(EventId = 513, Level = LogLevel.Warning, Message = "could not ask the controller about {Name}: {Reason}")]
    public static partial void ControllerLookupFailed(ILogger logger, string name, string reason);
}
