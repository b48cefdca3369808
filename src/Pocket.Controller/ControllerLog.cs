using Microsoft.Extensions.Logging;

namespace Pocket.Controller;

/// <summary>Every log line of the controller, with fixed event ids (400-499) so operators can filter on them.</summary>
internal static partial class ControllerLog
{
    [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "controller listening on {Url}, metadata server {Metadata}")]
    public static partial void Listening(ILogger logger, string url, string metadata);

    [LoggerMessage(EventId = 401, Level = LogLevel.Information, Message = "job {JobId} registered: {Tier}, {Throughput}, {Capacity}, {NodesNeeded} nodes needed ({Bound}-bound), weights {Weights}")]
    public static partial void JobRegistered(ILogger logger, string jobId, string tier, string throughput, string capacity, int nodesNeeded, string bound, string weights);

    [LoggerMessage(EventId = 402, Level = LogLevel.Information, Message = "job {JobId} ended ({Reason}): {Objects} objects, {Bytes} bytes freed")]
    public static partial void JobEnded(ILogger logger, string jobId, string reason, long objects, long bytes);

    [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "starting {Count} {Tier} nodes of {Capacity} for job {JobName}")]
    public static partial void StartingNodes(ILogger logger, int count, string tier, string capacity, string jobName);

    [LoggerMessage(EventId = 404, Level = LogLevel.Information, Message = "node {Handle} started ({Tier}, id {NodeId}, {Address})")]
    public static partial void NodeStarted(ILogger logger, string handle, string tier, string nodeId, string address);

    [LoggerMessage(EventId = 405, Level = LogLevel.Warning, Message = "registration of job {JobName} failed: {Reason}")]
    public static partial void RegistrationFailed(ILogger logger, string jobName, string reason);

    [LoggerMessage(EventId = 406, Level = LogLevel.Warning, Message = "lease check of job {JobId} skipped: {Reason}")]
    public static partial void LeaseCheckFailed(ILogger logger, string jobId, string reason);

    [LoggerMessage(EventId = 407, Level = LogLevel.Warning, Message = "lease pass failed: {Reason}")]
    public static partial void LeasePassFailed(ILogger logger, Exception exception, string reason);

    [LoggerMessage(EventId = 409, Level = LogLevel.Warning, Message = "a JobEnded handler failed for job {JobId}")]
    public static partial void JobEndedHandlerFailed(ILogger logger, Exception exception, string jobId);

    [LoggerMessage(EventId = 408, Level = LogLevel.Warning, Message = "request {Method} {Path} failed: {Reason}")]
    public static partial void RequestFailed(ILogger logger, string method, string path, string reason);

    [LoggerMessage(EventId = 410, Level = LogLevel.Information, Message = "storage node {NodeId} started as process {ProcessId} at {Address}")]
    public static partial void ProcessNodeStarted(ILogger logger, uint nodeId, string address, int processId);

    [LoggerMessage(EventId = 411, Level = LogLevel.Warning, Message = "telemetry poll failed: {Reason}")]
    public static partial void TelemetryFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 412, Level = LogLevel.Information, Message = "autoscaler {Kind} node {NodeId}: {Reason}")]
    public static partial void ScalingEvent(ILogger logger, string kind, string nodeId, string reason);

    [LoggerMessage(EventId = 413, Level = LogLevel.Warning, Message = "could not stop node {Handle}, which serves nobody: {Reason}")]
    public static partial void OrphanStopFailed(ILogger logger, string handle, string reason);

    [LoggerMessage(EventId = 414, Level = LogLevel.Warning, Message = "warm pool: {Reason}")]
    public static partial void WarmPoolFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 416, Level = LogLevel.Warning, Message = "warm pool: standby node {NodeId} ({Handle}) is gone (missed heartbeats or stopped); stopping it and starting a replacement")]
    public static partial void WarmPoolNodeLost(ILogger logger, uint nodeId, string handle);

    [LoggerMessage(EventId = 415, Level = LogLevel.Warning, Message = "job usage poll of {JobId} failed: {Reason}")]
    public static partial void UsagePollFailed(ILogger logger, string jobId, string reason);

    [LoggerMessage(EventId = 417, Level = LogLevel.Warning, Message = "request {Method} {Path} refused (401): {Reason}")]
    public static partial void Unauthorized(ILogger logger, string method, string path, string reason);

    [LoggerMessage(EventId = 420, Level = LogLevel.Warning, Message = "replacing dead node {NodeId}: {Reason}")]
    public static partial void NodeReplacing(ILogger logger, uint nodeId, string reason);

    [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "no replacement for dead node {NodeId}: {Reason}")]
    public static partial void NodeReplaceFailed(ILogger logger, uint nodeId, string reason);

    [LoggerMessage(EventId = 422, Level = LogLevel.Warning, Message = "no {Tier} node started: {Reason}")]
    public static partial void HostBudgetRefused(ILogger logger, string tier, string reason);

    [LoggerMessage(EventId = 430, Level = LogLevel.Information, Message = "metadata server started as process {ProcessId} at {Address} (answering {LostJobs} lost jobs JobLost)")]
    public static partial void ProcessMetadataStarted(ILogger logger, string address, int processId, int lostJobs);

    [LoggerMessage(EventId = 431, Level = LogLevel.Warning, Message = "metadata server {Address} failed probe {Failures} of {Limit}: {Reason}")]
    public static partial void MetadataProbeFailed(ILogger logger, string address, int failures, int limit, string reason);

    [LoggerMessage(EventId = 432, Level = LogLevel.Error, Message = "metadata server {Address} is lost ({Reason}); its {Jobs} jobs are lost")]
    public static partial void MetadataLost(ILogger logger, string address, string reason, int jobs);

    [LoggerMessage(EventId = 433, Level = LogLevel.Information, Message = "metadata server {Address} replaced: {Detail}")]
    public static partial void MetadataReplaced(ILogger logger, string address, string detail);

    [LoggerMessage(EventId = 434, Level = LogLevel.Error, Message = "no replacement for lost metadata server {Address}: {Reason}")]
    public static partial void MetadataReplaceFailed(ILogger logger, string address, string reason);

    [LoggerMessage(EventId = 435, Level = LogLevel.Information, Message = "job {JobId}'s token handed out to {Remote} (GET credentials with the cluster token)")]
    public static partial void CredentialsHandedOut(ILogger logger, string jobId, string remote);

    [LoggerMessage(EventId = 436, Level = LogLevel.Information, Message = "metadata plane {Kind} {Address}: {Reason}")]
    public static partial void MetadataScaled(ILogger logger, string kind, string address, string reason);

    [LoggerMessage(EventId = 437, Level = LogLevel.Warning, Message = "metadata plane: {Reason}")]
    public static partial void MetadataScaleFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 438, Level = LogLevel.Debug, Message = "load of metadata server {Address} not read: {Reason}")]
    public static partial void MetadataLoadUnread(ILogger logger, string address, string reason);
}
