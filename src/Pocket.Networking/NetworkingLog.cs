using Microsoft.Extensions.Logging;

namespace Pocket.Networking;

internal static partial class NetworkingLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "{Server} listening on {EndPoint}")]
    public static partial void Listening(ILogger logger, string server, string endPoint);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "{Server} accept failed: {Reason}")]
    public static partial void AcceptFailed(ILogger logger, string server, string reason);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "{Server} refused a connection: {Max} connections open")]
    public static partial void TooManyConnections(ILogger logger, string server, int max);

    [LoggerMessage(EventId = 103, Level = LogLevel.Debug, Message = "{Server} connection from {Remote} closed: {Reason}")]
    public static partial void ConnectionClosed(ILogger logger, string server, string remote, string reason);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "{Server} closed a connection from {Remote} after a bad frame: {Status}")]
    public static partial void BadFrame(ILogger logger, string server, string remote, string status);

    [LoggerMessage(EventId = 105, Level = LogLevel.Error, Message = "{Server} handler failed")]
    public static partial void HandlerFailed(ILogger logger, string server, Exception exception);

    [LoggerMessage(EventId = 106, Level = LogLevel.Debug, Message = "{Server} closed a connection from {Remote}: idle for {Idle}")]
    public static partial void IdleClosed(ILogger logger, string server, string remote, TimeSpan idle);

    [LoggerMessage(EventId = 107, Level = LogLevel.Information, Message = "{Server} accepts up to {Max} connections (open-file limit {FileLimit})")]
    public static partial void ConnectionLimit(ILogger logger, string server, int max, string fileLimit);

    [LoggerMessage(EventId = 109, Level = LogLevel.Warning, Message = "{Server} may accept {Max} connections, but the open-file limit {FileLimit} leaves the process's accepted connections {Budget} descriptors: connects past them are closed as they come (raise the hard open-file limit, or lower the connection maximum)")]
    public static partial void ConnectionLimitAboveFileLimit(ILogger logger, string server, int max, long fileLimit, int budget);

    [LoggerMessage(EventId = 111, Level = LogLevel.Warning, Message = "{Server} refused a connection: the process's connections hold all {Budget} descriptors its open-file limit leaves accepted ones")]
    public static partial void OutOfDescriptors(ILogger logger, string server, int budget);

    [LoggerMessage(EventId = 112, Level = LogLevel.Warning, Message = "{Server} refused {Count} more connections in the last {Seconds} s: {Max} connections open")]
    public static partial void TooManyConnectionsMore(ILogger logger, string server, int count, int seconds, int max);

    [LoggerMessage(EventId = 113, Level = LogLevel.Warning, Message = "{Server} refused {Count} more connections in the last {Seconds} s: the process's connections hold all {Budget} descriptors its open-file limit leaves accepted ones")]
    public static partial void OutOfDescriptorsMore(ILogger logger, string server, int count, int seconds, int budget);

    [LoggerMessage(EventId = 108, Level = LogLevel.Warning, Message = "{Server} closed a connection from {Remote}: {Backlog} bytes of replies unread, over the bound of {Max}")]
    public static partial void ReplyBacklogExceeded(ILogger logger, string server, string remote, int backlog, int max);

    [LoggerMessage(EventId = 115, Level = LogLevel.Warning, Message = "{Server} closed a connection from {Remote}: {Waiting} bytes of replies unread for {Stalled}, the peer reads none of them")]
    public static partial void RepliesStalled(ILogger logger, string server, string remote, int waiting, TimeSpan stalled);

    [LoggerMessage(EventId = 114, Level = LogLevel.Warning, Message = "{Server} stopped with handlers still running after {Timeout}: {Held} connections are closed by their threads when their handlers return")]
    public static partial void StoppedWithHandlersRunning(ILogger logger, string server, TimeSpan timeout, int held);

    [LoggerMessage(EventId = 110, Level = LogLevel.Debug, Message = "connection to {Remote} failed: {Reason}")]
    public static partial void ClientConnectionFailed(ILogger logger, string remote, string reason);
}
