using System.Net;
using Pocket.Controller.Contracts;

namespace Pocket.Cli;

/// <summary>
/// Which job a verb means: one this user registered (jobs.json), else any job of the cluster, asked of the controller
/// with the cluster token by id, or by name when one job has it. So `pocket ls photos` reads a bucket made through S3
/// (its job is named after it) and `pocket s3 credentials ID` works for a job registered by a script or another user.
/// </summary>
internal static class JobLookup
{
    public static async Task<JobEntry> ResolveAsync(PocketHome home, string jobIdOrName, string? metadataOption, CancellationToken cancellationToken)
    {
        if (home.ReadJobs().Find(j => j.Id == jobIdOrName) is { } local)
        {
            return local;
        }

        using var connection = ControllerConnection.TryResolve(controllerOption: null, metadataOption, home)
            ?? throw new CliException($"unknown job '{jobIdOrName}': register one with `pocket job register NAME` (known jobs: `pocket job ls`)");
        JobCredentialsResponse? job;
        try
        {
            job = await connection.CallAsync(c => c.GetJobCredentialsAsync(jobIdOrName, cancellationToken)).ConfigureAwait(false);
        }
        catch (PocketControllerException ex) when (ex.HttpStatus == HttpStatusCode.Conflict)
        {
            throw new CliException(ex.Message, ex);
        }

        return job is null
            ? throw new CliException($"unknown job '{jobIdOrName}': neither {home.JobsFile} nor the controller at {connection.Text} has a job or bucket of that id or name (`pocket job ls` lists them)")
            : new JobEntry(job.JobId, job.Token.ToString(), job.Metadata, connection.Text);
    }
}
