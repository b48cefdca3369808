namespace Pocket.Client;

public sealed partial class PocketClient
{
    /// <summary>
    /// Connects to the metadata server of the cluster the controller at <paramref name="controller"/> runs, so a
    /// program needs to know one address. The controller is asked with <see cref="PocketClientOptions.ClusterToken"/>. Register jobs with <see cref="PocketControllerClient"/> and open them with
    /// <see cref="OpenJob(JobRegistration)"/>.
    /// </summary>
    /// <exception cref="PocketControllerException">The controller cannot be reached or failed.</exception>
    public static async Task<PocketClient> ConnectViaControllerAsync(Uri controller, PocketClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var api = new PocketControllerClient(controller, options?.ClusterToken ?? default);
        var cluster = await api.GetClusterAsync(cancellationToken).ConfigureAwait(false);
        return await ConnectAsync(cluster.Metadata, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A handle on a job the controller registered, with the token from its registration.</summary>
    public PocketJob OpenJob(JobRegistration registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        return OpenJob(registration.JobId, registration.Token);
    }
}
