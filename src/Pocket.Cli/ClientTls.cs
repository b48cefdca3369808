using System.Net.Security;
using Pocket.Client;
using Pocket.Networking;

namespace Pocket.Cli;

/// <summary>
/// TLS of the client verbs: the CA (or self-signed certificate) to trust comes from --tls-ca, else $POCKET_TLS_CA, else
/// from the cluster.json of `pocket up --tls`; the name servers' certificates must carry from --tls-name, else
/// $POCKET_TLS_NAME, else localhost for `pocket up`'s certificate, else the host connected to. With neither,
/// connections are plain (an https:// controller is still checked against the system's roots).
/// </summary>
internal static class ClientTls
{
    public const string Variable = "POCKET_TLS_CA";
    public const string NameVariable = "POCKET_TLS_NAME";
    public const string OptionName = "--tls-ca";
    public const string NameOptionName = "--tls-name";

    // The options of the command being run; set once per process, before its action connects anywhere.
    private static string? s_trustOption;
    private static string? s_nameOption;

    /// <summary>The trust options of a client verb (<see cref="Options"/>), given on the command line.</summary>
    public static void UseOptions(string? trustFile, string? name)
    {
        s_trustOption = string.IsNullOrWhiteSpace(trustFile) ? null : trustFile.Trim();
        s_nameOption = string.IsNullOrWhiteSpace(name) ? null : name.Trim();
    }

    /// <summary>What --tls-ca and --tls-name were given as (for a child that must connect the same way), or nulls.</summary>
    public static (string? TrustFile, string? Name) GivenOptions => (s_trustOption, s_nameOption);

    /// <summary>The --tls-ca and --tls-name options every command that connects to a cluster takes.</summary>
    public static (TrustOption Trust, TrustOption Name) Options() => (
        new TrustOption(OptionName)
        {
            Description = $"CA or self-signed certificate (PEM or DER) to trust for TLS to the cluster (default: ${Variable}, else the cluster of `pocket up --tls`)",
            HelpName = "FILE",
        },
        new TrustOption(NameOptionName)
        {
            Description = $"Name the servers' certificates carry (default: ${NameVariable}, else the host connected to; localhost for `pocket up --tls`)",
            HelpName = "NAME",
        });

    /// <summary>The trust file and where it came from, or null.</summary>
    public static (string Path, string Source)? TrustFile(PocketHome home)
    {
        if (s_trustOption is { } fromOption)
        {
            return (fromOption, OptionName);
        }

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

        // `pocket up --tls`'s certificate names localhost; with --tls-ca or $POCKET_TLS_CA the host connected to is checked.
        var name = s_nameOption
            ?? (Environment.GetEnvironmentVariable(NameVariable) is { Length: > 0 } configured
                ? configured.Trim()
                : file.Source is Variable or OptionName ? metadataHost : Up.LocalTls.Name);
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

/// <summary>A client verb's --tls-ca or --tls-name (a type of its own, so the runner tells them from a role's options).</summary>
internal sealed class TrustOption(string name) : System.CommandLine.Option<string?>(name);
