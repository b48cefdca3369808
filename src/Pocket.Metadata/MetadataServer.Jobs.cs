using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Metadata;

public sealed partial class MetadataServer
{
    /// <summary>RegisterJob (<see cref="RegisterJobRequest"/>, reply <see cref="RegisterJobReply"/>). An all-zero token asks the server to make one.</summary>
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

        if (token.IsNone)
        {
            token = JobToken.NewRandom();
        }

        JobEntry job;
        lock (_lock)
        {
            if (_jobsByToken.ContainsKey(token))
            {
                frame.ReplyError(Status.Exists, "that token already belongs to a job");
                return;
            }

            var n = _jobCounters[name] = _jobCounters.GetValueOrDefault(name) + 1;
            job = new JobEntry { Id = $"{name}-{n}", Token = token, Tier = tier };
            _jobsById[job.Id] = job;
            _jobsByToken[token] = job;
        }

        MetadataLog.JobRegistered(_logger, job.Id);
        var body = new BodyWriter();
        RegisterJobReply.Write(body, new RegisterJobReply(job.Id, token));
        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    private readonly List<JobEntry> _retiredJobs = [];
    private ITimer? _retireTimer;

    /// <summary>Frees the keep-after-job objects of ended jobs whose time to live ran out.</summary>
    private void ExpireRetiredJobs()
    {
        var expired = new List<(string Id, long Objects)>();
        lock (_lock)
        {
            var now = _options.TimeProvider.GetTimestamp();
            foreach (var job in _retiredJobs.Where(j => j.RetiredUntil <= now).ToList())
            {
                _retiredJobs.Remove(job);
                _jobsByToken.Remove(job.Token);
                expired.Add((job.Id, job.Objects.Count));
                foreach (var entry in job.Objects.Values.ToList())
                {
                    RemoveObject(job, entry.Key);
                    FreeObject(job, entry);
                }
            }
        }

        foreach (var (id, objects) in expired)
        {
            MetadataLog.JobDeregistered(_logger, id + " (keep-after-job objects expired)", objects, 0);
        }
    }

    /// <summary>True (after replying) when the job has ended and only keeps read-only objects.</summary>
    private static bool RejectIfRetired(FrameContext frame, JobEntry job)
    {
        if (job.RetiredUntil is null)
        {
            return false;
        }

        frame.ReplyError(Status.Unauthorized, $"job '{job.Id}' has ended; its keep-after-job objects are read-only until they expire");
        return true;
    }

    /// <summary>DeregisterJob (<see cref="DeregisterJobRequest"/>): frees every byte of the job at once. Reply: objects and bytes freed.</summary>
    private void HandleDeregisterJob(FrameContext frame)
    {
        if (!DeregisterJobRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "deregister-job");
            return;
        }

        if (!IsAdmin(frame, out var error))
        {
            frame.ReplyError(Status.Unauthorized, error);
            return;
        }

        long objects, bytes;
        lock (_lock)
        {
            if (!_jobsById.Remove(id, out var job))
            {
                frame.ReplyError(Status.NotFound, $"no job '{id}'");
                return;
            }

            foreach (var handle in _handles.Values.Where(h => h.Job == job).ToList())
            {
                ReleaseHandle(handle);
            }

            objects = 0;
            bytes = 0;
            foreach (var entry in job.Objects.Values.Where(e => (e.Flags & FrameFlags.KeepAfterJob) == 0).ToList())
            {
                objects++;
                bytes += entry.Size;
                RemoveObject(job, entry.Key);
                FreeObject(job, entry);
            }

            if (job.Objects.Count == 0)
            {
                _jobsByToken.Remove(job.Token);
            }
            else
            {
                // Keep-after-job objects outlive the job, read-only under its token, until their own time to live.
                job.RetiredUntil = _options.TimeProvider.GetTimestamp() + (long)(_options.KeepAfterJobTtl.TotalSeconds * _options.TimeProvider.TimestampFrequency);
                _retiredJobs.Add(job);
                _retireTimer ??= _options.TimeProvider.CreateTimer(_ => ExpireRetiredJobs(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
            }
        }

        MetadataLog.JobDeregistered(_logger, id, objects, bytes);
        var reply = new BodyWriter();
        DeregisterJobReply.Write(reply, new DeregisterJobReply(objects, bytes));
        frame.Reply(Status.Ok, reply.WrittenSpan);
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

        lock (_lock)
        {
            if (!_jobsById.TryGetValue(id, out var job))
            {
                frame.ReplyError(Status.NotFound, $"no job '{id}'");
                return;
            }

            job.Weights = new Dictionary<uint, double>(weights);
            if (tier is { } chosen)
            {
                job.Tier = chosen;
            }
        }

        frame.Reply(Status.Ok);
    }

    /// <summary>JobStats (<see cref="JobStatsRequest"/>, reply <see cref="JobStatsReply"/>): a job by id, or the header token's job when the id is empty.</summary>
    private void HandleJobStats(FrameContext frame)
    {
        if (!JobStatsRequest.TryRead(frame.ReadBody(), out var id))
        {
            BadBody(frame, "job-stats");
            return;
        }

        var body = new BodyWriter();
        lock (_lock)
        {
            JobEntry? job;
            if (id.Length == 0)
            {
                _jobsByToken.TryGetValue(frame.Header.Token, out job);
            }
            else if (IsAdmin(frame, out _))
            {
                _jobsById.TryGetValue(id, out job);
            }
            else
            {
                _jobsByToken.TryGetValue(frame.Header.Token, out job);
                job = job?.Id == id ? job : null;
            }

            if (job is null && id.Length == 0)
            {
                // Asking about "my job" with a token that names none is the same failure as any data request.
                frame.ReplyError(Status.Unauthorized, "unknown job token");
                return;
            }

            if (job is null)
            {
                frame.ReplyError(Status.NotFound, "no such job (or not yours)");
                return;
            }

            JobStatsReply.Write(body, new JobStatsReply(job.Id, job.Objects.Count, job.StoredBytes, job.InlineBytes, job.Requests) { Tier = job.Tier, TierBytes = job.TierBytes });
        }

        frame.Reply(Status.Ok, body.WrittenSpan);
    }

    private void FreeObject(JobEntry job, ObjectEntry entry)
    {
        if (entry.Inline is not null)
        {
            job.InlineBytes -= entry.Inline.Length;
            _inlineBytes -= entry.Inline.Length;
        }
        else
        {
            job.StoredBytes -= entry.Size;
            FreeExtents(entry.Extents);
        }
    }

    private void ReleaseHandle(OpenHandle handle)
    {
        if (!_handles.Remove(handle.Id))
        {
            return;
        }

        if (handle.IsWrite)
        {
            handle.Job.Reserved.Remove(handle.Key);
        }

        FreeExtents(handle.Extents);
        handle.Extents.Clear();
    }
}
