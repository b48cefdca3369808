using System.Net.Security;
using Pocket.Client;
using Pocket.Networking;

namespace Pocket.Cli;

/// <summary>
/// TLS of the client verbs: the CA (or self-signed certificate) to trust comes from $POCKET_TLS_CA, else from the
/// cluster.json of `pocket up --tls`; the name servers' certificates must carry from $POCKET_TLS_NAME, else localhost
/// for `pocket up`'s certificate, else the host connected to. With neither, connections are plain (an https://
/// controller is still checked against the system's roots).
/// </summary>
internal static class ClientTls
{
    public const string Variable = "POCKET_TLS_CA";
    public const string NameVariable = "POCKET_TLS_NAME";

    /// <summary>The trust file and where it came from, or null.</summary>
    public static (string Path, string Source)? TrustFile(PocketHome home)
    {
        var fromEnvironment = Environment.GetEnvironmentVariable(Variable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return (fromEnvironment.Trim(), Variable);
        }

        return home.ReadCluster()?.TlsCa is { Length: > 0 } path ? (path, home.ClusterFile) : null;
    }

    /// <summary>How a server certificate is checked (null: the system's roots only).</summary>
    public static RemoteCertificateValidationCallback? Validation(PocketHome home) =>
        TrustFile(home) is { } file ? Validation(file) : null;

    /// <summary><paramref name="options"/> with TLS to the metadata server when a trust file is configured.</summary>
    public static PocketClientOptions Apply(PocketClientOptions options, PocketHome home, string metadataHost)
    {
        if (TrustFile(home) is not { } file)
        {
            return options;
        }

        // `pocket up --tls`'s certificate names localhost; with $POCKET_TLS_CA the host connected to is checked.
        var name = Environment.GetEnvironmentVariable(NameVariable) is { Length: > 0 } configured
            ? configured.Trim()
            : file.Source == Variable ? metadataHost : Up.LocalTls.Name;
        return options with { TlsHost = name, CertificateValidation = Validation(file) };
    }

    private static RemoteCertificateValidationCallback Validation((string Path, string Source) file)
    {
        try
        {
            return TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(file.Path));
        }
        catch (TlsConfigurationException ex)
        {
            throw new CliException($"{ex.Message} (from {file.Source})", ex);
        }
    }
}
