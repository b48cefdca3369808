using System.Net;
using Pocket.Client;

namespace Pocket.Controller.Contracts;

/// <summary>Opens jobs the controller registered on a <see cref="PocketClient"/>.</summary>
public static class PocketClientExtensions
{
    /// <summary>
    /// A handle on a job the controller registered, with the token from its registration. The job lives on the metadata
    /// server the registration names (<see cref="RegisterJobResponse.Metadata"/>; a cluster may have several): connect the
    /// client there, e.g. <c>PocketClient.ConnectAsync(registration.Metadata)</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The client is connected to another metadata server than the job's.</exception>
    public static PocketJob OpenJob(this PocketClient client, RegisterJobResponse registration)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(registration);
        if (!SameServer(client.MetadataAddress, registration.Metadata))
        {
            throw new ArgumentException($"job {registration.JobId} lives on metadata server {registration.Metadata}, and this client is connected to {client.MetadataAddress}: connect a client to {registration.Metadata}", nameof(client));
        }

        return client.OpenJob(registration.JobId, registration.Token);
    }

    // Host names are not resolved: "localhost" and 127.0.0.1 are one server; only a different port, or two different
    // IP addresses, certainly name another.
    private static bool SameServer(string a, string b)
    {
        if (string.IsNullOrEmpty(b) || string.Equals(a, b, StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        var (hostA, portA) = Split(a);
        var (hostB, portB) = Split(b);
        if (portA != portB)
        {
            return false;
        }

        return !(IPAddress.TryParse(hostA, out var ipA) && IPAddress.TryParse(hostB, out var ipB) && !ipA.Equals(ipB));

        static (string Host, string Port) Split(string address)
        {
            var colon = address.LastIndexOf(':');
            return colon > 0 ? (address[..colon].Trim('[', ']'), address[(colon + 1)..]) : (address, string.Empty);
        }
    }
}
