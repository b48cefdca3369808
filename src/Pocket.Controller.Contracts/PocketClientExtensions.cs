using Pocket.Client;

namespace Pocket.Controller.Contracts;

/// <summary>Opens jobs the controller registered on a <see cref="PocketClient"/>.</summary>
public static class PocketClientExtensions
{
    /// <summary>A handle on a job the controller registered, with the token from its registration.</summary>
    public static PocketJob OpenJob(this PocketClient client, RegisterJobResponse registration)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(registration);
        return client.OpenJob(registration.JobId, registration.Token);
    }
}
