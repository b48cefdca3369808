using Microsoft.Extensions.Logging;

namespace Pocket.Kubernetes;

/// <summary>Every log line of the Kubernetes provisioner, with fixed event ids (450-469) so operators can filter on them.</summary>
internal static partial class KubernetesLog
{
    [LoggerMessage(EventId = 450, Level = LogLevel.Information, Message = "created storage pod {Pod} in {Namespace}: {Tier}, {CapacityBytes} bytes")]
    public static partial void PodCreated(ILogger logger, string pod, string @namespace, string tier, long capacityBytes);

    [LoggerMessage(EventId = 451, Level = LogLevel.Information, Message = "{Role} pod {Pod} is ready at {Address}")]
    public static partial void PodReady(ILogger logger, string role, string pod, string address);

    [LoggerMessage(EventId = 452, Level = LogLevel.Information, Message = "deleted storage pod {Pod} (grace period {GraceSeconds} s)")]
    public static partial void PodDeleted(ILogger logger, string pod, long graceSeconds);

    [LoggerMessage(EventId = 453, Level = LogLevel.Information, Message = "storage pod {Pod} was already gone")]
    public static partial void PodAlreadyGone(ILogger logger, string pod);

    [LoggerMessage(EventId = 454, Level = LogLevel.Warning, Message = "storage pod {Pod} did not start: {Reason}; deleting it")]
    public static partial void PodStartFailed(ILogger logger, string pod, string reason);

    [LoggerMessage(EventId = 455, Level = LogLevel.Warning, Message = "could not delete storage pod {Pod} that failed to start; delete it by hand")]
    public static partial void CleanupFailed(ILogger logger, Exception exception, string pod);

    [LoggerMessage(EventId = 457, Level = LogLevel.Information, Message = "created metadata pod {Pod} in {Namespace} for server {Index} ({LostJobs} lost jobs to answer)")]
    public static partial void MetadataPodCreated(ILogger logger, string pod, string @namespace, int index, int lostJobs);

    [LoggerMessage(EventId = 458, Level = LogLevel.Warning, Message = "metadata pod {Pod} still exists ({State}); deleting it so a new server can start at its address")]
    public static partial void MetadataPodLeftover(ILogger logger, string pod, string state);

    [LoggerMessage(EventId = 459, Level = LogLevel.Information, Message = "deleted metadata pod {Pod} (grace period {GraceSeconds} s)")]
    public static partial void MetadataPodDeleted(ILogger logger, string pod, long graceSeconds);

    [LoggerMessage(EventId = 460, Level = LogLevel.Warning, Message = "could not delete {What}; delete it by hand")]
    public static partial void MetadataCleanupFailed(ILogger logger, Exception exception, string what);

    [LoggerMessage(EventId = 456, Level = LogLevel.Information, Message = "Kubernetes provisioner: namespace {Namespace}, image {Image}, metadata {Metadata}, tiers {Tiers}")]
    public static partial void Configured(ILogger logger, string @namespace, string image, string metadata, string tiers);
}
