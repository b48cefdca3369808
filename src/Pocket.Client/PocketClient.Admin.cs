using Pocket.Protocol;

namespace Pocket.Client;

public sealed partial class PocketClient
{
    /// <summary>
    /// Usage of any job by id (objects, bytes, requests served). Needs the cluster token in
    /// <see cref="PocketClientOptions.ClusterToken"/> when the cluster has one; the controller polls it to renew leases.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">The metadata server has no such job.</exception>
    public async Task<JobUsage> GetJobUsageAsync(string jobId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        var reply = await SendMetadataAsync(Opcode.JobStats, FrameFlags.None, Options.ClusterToken, new BodyWriter().Str(jobId).WrittenMemory, cancellationToken).ConfigureAwait(false);
        return JobUsage.Read(reply.Body);
    }
}
