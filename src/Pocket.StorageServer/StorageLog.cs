using Microsoft.Extensions.Logging;

namespace Pocket.StorageServer;

internal static partial class StorageLog
{
    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "storage node {NodeId} registered at {Address}, tier {Tier}, {Capacity} bytes")]
    public static partial void Registered(ILogger logger, uint nodeId, string address, string tier, long capacity);

    [LoggerMessage(EventId = 301, Level = LogLevel.Warning, Message = "heartbeat failed: {Reason}")]
    public static partial void HeartbeatFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 302, Level = LogLevel.Warning, Message = "node {NodeId} unknown to the metadata server ({Reason}); registering again as a new node")]
    public static partial void Reregistering(ILogger logger, uint nodeId, string reason);

    [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "device error: {Reason}")]
    public static partial void DeviceFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 304, Level = LogLevel.Information, Message = "device: {Description}")]
    public static partial void DeviceReady(ILogger logger, string description);

    [LoggerMessage(EventId = 305, Level = LogLevel.Warning, Message = "metadata server {Address} unreachable: {Reason}")]
    public static partial void MetadataUnreachable(ILogger logger, string address, string reason);

    [LoggerMessage(EventId = 306, Level = LogLevel.Warning, Message = "metadata server {Address} lost; its {Segments} segments are reset and go to the other servers")]
    public static partial void MetadataLost(ILogger logger, string address, int segments);

    [LoggerMessage(EventId = 307, Level = LogLevel.Information, Message = "moved {Segments} free segments from metadata server {From} to {To} (targets {FromTarget} and {ToTarget} of 64)")]
    public static partial void ShareMoved(ILogger logger, int segments, string from, string to, int fromTarget, int toTarget);

    [LoggerMessage(EventId = 308, Level = LogLevel.Warning, Message = "metadata server {Address} has not answered for {Seconds:0.#} s; its share is kept until it answers, says this node is dead, or stays silent past the limit")]
    public static partial void HeartbeatUnanswered(ILogger logger, string address, double seconds);

    [LoggerMessage(EventId = 309, Level = LogLevel.Warning, Message = "metadata server {Address} took the connection but did not answer the registration within {Seconds:0.###} s; joining it again at the next heartbeat")]
    public static partial void RegistrationUnanswered(ILogger logger, string address, double seconds);

    [LoggerMessage(EventId = 310, Level = LogLevel.Warning, Message = "metadata server {Address} did not answer {Request} within {Seconds:0.###} s; its share stays as it is until the answer comes, and the rounds go on")]
    public static partial void ShareRequestUnanswered(ILogger logger, string address, string request, double seconds);

    [LoggerMessage(EventId = 311, Level = LogLevel.Information, Message = "metadata server {Address} answered a ReleaseShare late: {Segments} segments given up go to the other servers")]
    public static partial void ShareReleasedLate(ILogger logger, string address, int segments);
}
