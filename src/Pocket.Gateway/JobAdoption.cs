using System.Net;
using Microsoft.Extensions.Logging;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Gateway;

/// <summary>
/// Every job is a bucket: a job registered anywhere (`pocket job register`, the clients, the controller's API) becomes a
/// bucket, named by its job id, the first time someone addresses it, and its own credentials (access key = job id,
/// secret key = token) are accepted for it. The gateway asks the controller (with the cluster token) for the job's
/// token, adopts it into the bucket map, and from then on knows it like a bucket it made. A bucket made through S3 is
/// also reachable by its job id. Names the controller does not know are remembered for a few seconds, so a client
/// retrying a wrong key or bucket does not turn into a stream of controller calls.
/// </summary>
internal sealed class JobAdoption(PocketControllerClient controller, BucketStore buckets, TimeProvider clock, ILogger logger)
{
    /// <summary>How long a name the controller did not know is answered from memory.</summary>
    public static readonly TimeSpan MissMemory = TimeSpan.FromSeconds(5);

    private const int MaxMisses = 4096;

    private readonly Dictionary<string, DateTimeOffset> _misses = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    /// <summary>The bucket named <paramref name="name"/>, or the bucket of the job with that id (adopted now if need be); null when neither exists.</summary>
    public async ValueTask<Bucket?> FindAsync(string name, CancellationToken cancellationToken)
    {
        if ((buckets.Find(name) ?? buckets.FindByJobId(name)) is { } known)
        {
            return known;
        }

        var job = await LookUpAsync(name, cancellationToken).ConfigureAwait(false);
        if (job is null)
        {
            return null;
        }

        // Two requests may adopt the same job at once; the second finds the first's entry.
        if (buckets.FindByJobId(job.JobId) is { } raced)
        {
            return raced;
        }

        var bucket = await buckets.AddAsync(new BucketEntry(job.JobId, job.JobId, job.Token.ToString(), clock.GetUtcNow(), job.JobId, job.Metadata)).ConfigureAwait(false);
        GatewayLog.JobAdopted(logger, job.JobId);
        return bucket;
    }

    /// <summary>The secret of a job's own access key (its id): the job's token, from the bucket map or the controller; null for no such job.</summary>
    public async ValueTask<(string Secret, string JobId)?> FindJobKeyAsync(string accessKey, CancellationToken cancellationToken)
    {
        if (buckets.FindByJobId(accessKey) is { } known)
        {
            return (known.Entry.Token, known.Entry.JobId);
        }

        // Not adopted before the signature is checked: a request with a job's id and a bad signature changes nothing.
        return await LookUpAsync(accessKey, cancellationToken).ConfigureAwait(false) is { } job ? (job.Token.ToString(), job.JobId) : null;
    }

    /// <summary>
    /// The registered jobs that are not buckets yet, named as they would be (their ids), for ListBuckets; none when the
    /// controller cannot be reached (the buckets the gateway knows are still listed).
    /// </summary>
    public async Task<IReadOnlyList<(string Name, DateTimeOffset Created)>> UnadoptedAsync(CancellationToken cancellationToken)
    {
        IReadOnlyList<JobResponse> jobs;
        try
        {
            jobs = await controller.ListJobsAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PocketControllerException ex)
        {
            GatewayLog.ControllerLookupFailed(logger, "(list of jobs)", ex.Message);
            return [];
        }

        return [.. jobs
            .Where(j => buckets.FindByJobId(j.JobId) is null && buckets.Find(j.JobId) is null && S3Handler.IsValidBucketName(j.JobId, out _))
            .Select(j => (j.JobId, j.RegisteredAt))];
    }

    /// <summary>The job whose id is exactly <paramref name="jobId"/> (never one that only has that name), or null.</summary>
    private async ValueTask<JobCredentialsResponse?> LookUpAsync(string jobId, CancellationToken cancellationToken)
    {
        if (!JobName.IsValid(jobId) || RecentlyMissed(jobId))
        {
            return null;
        }

        JobCredentialsResponse? job;
        try
        {
            job = await controller.GetJobCredentialsAsync(jobId, cancellationToken).ConfigureAwait(false);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.Conflict)
        {
            // Several jobs carry that name and none has it as id: a job id was not what was meant.
            job = null;
        }
        catch (PocketControllerException ex)
        {
            GatewayLog.ControllerLookupFailed(logger, jobId, ex.Message);
            throw new S3Exception(S3Error.ServiceUnavailable, $"'{jobId}' is not known here and the Pocket controller could not be asked about it; retry shortly: {ex.Message}", ex);
        }

        if (job is null || job.JobId != jobId)
        {
            Remember(jobId);
            return null;
        }

        return job;
    }

    private bool RecentlyMissed(string name)
    {
        lock (_lock)
        {
            if (!_misses.TryGetValue(name, out var until))
            {
                return false;
            }

            if (clock.GetUtcNow() < until)
            {
                return true;
            }

            _misses.Remove(name);
            return false;
        }
    }

    private void Remember(string name)
    {
        lock (_lock)
        {
            if (_misses.Count >= MaxMisses)
            {
                // A flood of made-up names: forgetting them all costs at most one controller call each again.
                _misses.Clear();
            }

            _misses[name] = clock.GetUtcNow() + MissMemory;
        }
    }
}
