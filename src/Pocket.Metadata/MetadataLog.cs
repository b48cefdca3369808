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

    [LoggerMessage(EventId = 204, Level = LogLevel.Information, Message = "node {NodeId} draining: {Bytes} bytes in use to move")]
    public static partial void DrainStarted(ILogger logger, uint nodeId, long bytes);

    [LoggerMessage(EventId = 205, Level = LogLevel.Information, Message = "node {NodeId} drained: {Bytes} bytes moved; it may be stopped")]
    public static partial void NodeDrained(ILogger logger, uint nodeId, long bytes);

    [LoggerMessage(EventId = 206, Level = LogLevel.Warning, Message = "drain of node {NodeId} stopped: {Reason}")]
    public static partial void DrainFailed(ILogger logger, uint nodeId, string reason);

    [LoggerMessage(EventId = 207, Level = LogLevel.Warning, Message = "drain of node {NodeId}: no room elsewhere for {Bytes} bytes of '{Key}'; will retry")]
    public static partial void DrainStalled(ILogger logger, uint nodeId, string key, int bytes);

    [LoggerMessage(EventId = 208, Level = LogLevel.Warning, Message = "drain of node {NodeId}: moving a block of '{Key}' failed, will retry: {Reason}")]
    public static partial void MoveFailed(ILogger logger, uint nodeId, string key, string reason);

    [LoggerMessage(EventId = 212, Level = LogLevel.Information, Message = "memory trimmed after {Freed} bytes of objects were freed: heap {Before} -> {After} bytes in {Milliseconds} ms")]
    public static partial void MemoryTrimmed(ILogger logger, long freed, long before, long after, long milliseconds);

    [LoggerMessage(EventId = 213, Level = LogLevel.Information, Message = "object memory bound {MaxObjectMemory} bytes ({MaxObjectMemorySource}); inline store {InlineCapacity} bytes ({InlineCapacitySource}); a small put with no room inline goes through storage nodes")]
    public static partial void MemoryBounds(ILogger logger, long maxObjectMemory, string maxObjectMemorySource, long inlineCapacity, string inlineCapacitySource);

    [LoggerMessage(EventId = 209, Level = LogLevel.Information, Message = "node {NodeId} removed after its drain")]
    public static partial void NodeRemoved(ILogger logger, uint nodeId);

    [LoggerMessage(EventId = 210, Level = LogLevel.Information, Message = "node {NodeId} does not know CopyExtent (an older version): drains copy to it through this server")]
    public static partial void CopyUnsupported(ILogger logger, uint nodeId);

    [LoggerMessage(EventId = 230, Level = LogLevel.Warning, Message = "node {NodeId} is suspect: no heartbeat for {Seconds:0.#} s (no new blocks, reads refused as unavailable; dead after {DeadAfter:0.#} s)")]
    public static partial void NodeSuspect(ILogger logger, uint nodeId, double seconds, double deadAfter);

    [LoggerMessage(EventId = 231, Level = LogLevel.Information, Message = "node {NodeId} is back after {Seconds:0.#} s without a heartbeat, its blocks intact")]
    public static partial void NodeBack(ILogger logger, uint nodeId, double seconds);

    [LoggerMessage(EventId = 211, Level = LogLevel.Warning, Message = "node {NodeId} did not take {Count} seals/forgets ({Reason}); its grants stay usable until they expire or a retry gets through")]
    public static partial void RevokeFailed(ILogger logger, uint nodeId, int count, string reason);

    [LoggerMessage(EventId = 240, Level = LogLevel.Information, Message = "node {NodeId} {Change} {Segments} segments of its share; this server now holds {Held} of 64")]
    public static partial void ShareChanged(ILogger logger, uint nodeId, string change, int segments, int held);

    [LoggerMessage(EventId = 241, Level = LogLevel.Information, Message = "node {NodeId}, declared dead here, registered again: a new record whose generations start at {FirstGeneration} (objects on the dead record stay lost)")]
    public static partial void NodeReregistered(ILogger logger, uint nodeId, uint firstGeneration);
}
