using System.Diagnostics;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    /// <summary>
    /// RegisterJob (<see cref="RegisterJobRequest"/>, reply <see cref="RegisterJobReply"/>): a job with its tier and weights.
    /// An all-zero token asks the server to make one.
    /// </summary>
    private void HandleRegisterJob(FrameContext frame)
    {
        if (!RegisterJobRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "register-job");
            return;
        }

        var (name, token, tier) = request;
        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if (!JobName.IsValid(name))
        {
            frame.ReplyError(Status.BadRequest, $"job name '{name}' must be {JobName.Rule}");
            return;
        }

        if (!Enum.IsDefined(tier))
        {
            frame.ReplyError(Status.BadRequest, $"unknown tier {(byte)tier}");
            return;
        }

        if (request.Weights is { } weights && SetWeightsRequest.FirstInvalidWeight(weights) is { } invalid)
        {
            frame.ReplyError(Status.BadRequest, $"weight of node {invalid} must be a finite number >= 0");
            return;
        }

        if (request.Quota?.FirstInvalid() is { } badQuota)
        {
            frame.ReplyError(Status.BadRequest, $"quota: {badQuota} must be >= 0 (0: no limit)");
            return;
        }

        // Tier, weights and quota are set with the job, so a job never exists without its placement (no second round trip).
        var result = _state.RegisterJob(name, token, tier, request.Weights, request.Quota);
        if (Failed(frame, result))
        {
            return;
        }

        var job = result.Value;
        MetadataLog.JobRegistered(_logger, job.Id);
        var body = new BodyWriter();
        RegisterJobReply.Write(body, new RegisterJobReply(job.Id, job.Token));
        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    /// <summary>DeregisterJob (<see cref="DeregisterJobRequest"/>): frees every byte of the job at once. Reply: objects and bytes freed.</summary>
    private void HandleDeregisterJob(FrameContext frame)
    {
        if (!DeregisterJobRequest.TryRead(frame.ReadBody(), out var id, out var why))
        {
            BadBody(frame, "deregister-job");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        var result = _state.DeregisterJob(id, why);
        if (Failed(frame, result))
        {
            return;
        }

        var (objects, bytes, retired) = result.Value;
        if (retired)
        {
            StartRetireTimer();
        }

        MetadataLog.JobDeregistered(_logger, id, objects, bytes);
        TrimMemoryAfter(result.Value.Memory);
        var reply = new BodyWriter();
        DeregisterJobReply.Write(reply, new DeregisterJobReply(objects, bytes));
        frame.Reply(Status.Ok, reply.WrittenSpan);
    }

    /// <summary>Starts, once, the timer that frees keep-after-job objects whose time to live ran out.</summary>
    private void StartRetireTimer()
    {
        if (Volatile.Read(ref _retireTimer) is not null)
        {
            return;
        }

        var timer = _options.TimeProvider.CreateTimer(_ => ExpireRetiredJobs(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
        if (Interlocked.CompareExchange(ref _retireTimer, timer, null) is not null)
        {
            timer.Dispose();
        }
    }

    private void ExpireRetiredJobs()
    {
        long freed = 0;
        foreach (var (id, objects, memory) in _state.ExpireRetiredJobs())
        {
            MetadataLog.JobDeregistered(_logger, id + " (keep-after-job objects expired)", objects, 0);
            freed += memory;
        }

        TrimMemoryAfter(freed);
    }

    /// <summary>
    /// After a job's end freed at least <see cref="MetadataServerOptions.TrimMemoryAfterFreeing"/> of object memory, one
    /// full, compacting collection that gives free memory back to the system, on the thread pool. Without it a server
    /// that just dropped a large job keeps its peak RSS until allocation pressure happens to run a full collection.
    /// It pauses the process for as long as the collection takes (logged), which is why it waits for a large free.
    /// </summary>
    private void TrimMemoryAfter(long freed)
    {
        TrimInlineSoon();
        if (_options.TrimMemoryAfterFreeing <= 0 || freed < _options.TrimMemoryAfterFreeing || Interlocked.Exchange(ref _trimming, 1) == 1)
        {
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(
            state =>
            {
                try
                {
                    var before = GC.GetTotalMemory(forceFullCollection: false);
                    var started = Stopwatch.GetTimestamp();
                    GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    MetadataLog.MemoryTrimmed(_logger, state, before, GC.GetTotalMemory(forceFullCollection: false), (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                }
                finally
                {
                    Volatile.Write(ref _trimming, 0);
                }
            },
            freed,
            preferLocal: false);
    }

    /// <summary>
    /// After a job's end, the inline store's free slots beyond its warm headroom go back to the system, on the thread
    /// pool (a few system calls per slab: not on the event loop). Skipped when little is free.
    /// </summary>
    private void TrimInlineSoon()
    {
        if (_state.Inline.FreeResidentBytes <= InlineStore.WarmHeadroom || Volatile.Read(ref _trimmingInline) == 1)
        {
            return;
        }

        ThreadPool.UnsafeQueueUserWorkItem(static server => server.TrimInline(idleOnly: false), this, preferLocal: false);
    }

    /// <summary>One inline trim at a time (<see cref="InlineStore.Trim"/>); the timer's tick skips while a job end's runs.</summary>
    private void TrimInline(bool idleOnly)
    {
        if (Interlocked.Exchange(ref _trimmingInline, 1) == 1)
        {
            return;
        }

        try
        {
            _state.Inline.Trim(idleOnly);
        }
        finally
        {
            Volatile.Write(ref _trimmingInline, 0);
        }
    }

    /// <summary>SetWeights (<see cref="SetWeightsRequest"/>). An empty map means "every node of the job's tier alike".</summary>
    private void HandleSetWeights(FrameContext frame)
    {
        if (!SetWeightsRequest.TryRead(frame.ReadBody(), out var request))
        {
            BadBody(frame, "set-weights");
            return;
        }

        if (SetWeightsRequest.FirstInvalidWeight(request!.Weights) is { } invalid)
        {
            frame.ReplyError(Status.BadRequest, $"weight of node {invalid} must be a finite number >= 0");
            return;
        }

        var (id, weights, tier) = request;
        if (tier is { } t && !Enum.IsDefined(t))
        {
            frame.ReplyError(Status.BadRequest, $"unknown tier {(byte)t}");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        if (!Failed(frame, _state.SetWeights(id, weights, tier)))
        {
            frame.Reply(Status.Ok);
        }
    }

    /// <summary>JobStats (<see cref="JobStatsRequest"/>, reply <see cref="JobStatsReply"/>): a job by id, or the header token's job when the id is empty.</summary>
    private void HandleJobStats(FrameContext frame)
    {
        if (!JobStatsRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "job-stats");
            return;
        }

        var result = _state.JobStats(id, frame.Header.Token, admin: id.Length > 0 && IsAdmin(frame, out _));
        if (Failed(frame, result))
        {
            return;
        }

        var body = new BodyWriter();
        JobStatsReply.Write(body, result.Value);
        frame.Reply(Status.Ok, body.WrittenSpan);
    }
}
