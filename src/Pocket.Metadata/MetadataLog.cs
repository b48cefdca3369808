using Microsoft.Extensions.Logging;

namespace Pocket.Metadata;

internal static partial class MetadataLog
{
    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "node {NodeId} registered at {Address}, tier {Tier}, {Capacity} bytes")]
    public static partial void NodeRegistered(ILogger logger, uint nodeId, string address, string tier, long capacity);

    [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "node {NodeId} declared dead: {Reason}")]
    public static partial void NodeDead(ILogger logger, uint nodeId, string reason);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "job {JobId} registered")]
    public static partial void JobRegistered(ILogger logger, string jobId);

    [LoggerMessage(EventId = 203, Level = LogLevel.Information, Message = "job {JobId} deregistered: {Objects} objects, {Bytes} bytes freed")]
    public static partial void JobDeregistered(ILogger logger, string jobId, long objects, long bytes);
}
