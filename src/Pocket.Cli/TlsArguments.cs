using System.CommandLine;
using System.Security.Cryptography.X509Certificates;
using Pocket.Client;
using Pocket.Networking;

namespace Pocket.Cli;

/// <summary>
/// The TLS options of the role commands: a certificate for a role's listener (--tls-cert, --tls-key; a PKCS#12
/// password from $POCKET_TLS_PASSWORD), and how a role connects to the others (--tls, --tls-ca, --tls-name).
/// </summary>
internal sealed class TlsArguments
{
    public const string PasswordVariable = "POCKET_TLS_PASSWORD";

    private readonly Option<string?> _cert = new("--tls-cert") { Description = $"Serve TLS with this certificate: PKCS#12 (.pfx, password in ${PasswordVariable}), or PEM with the certificate and its private key", HelpName = "PATH" };
    private readonly Option<string?> _key = new("--tls-key") { Description = "Private key (PEM) of --tls-cert, when not in the same file", HelpName = "PATH" };
    private readonly Option<bool> _tls = new("--tls") { Description = "Connect to the other servers with TLS (certificates checked against the system's trust)" };
    private readonly Option<string?> _ca = new("--tls-ca") { Description = "Also trust this CA or self-signed certificate (PEM or DER) for TLS connections; implies --tls", HelpName = "PATH" };
    private readonly Option<string?> _name = new("--tls-name") { Description = "Name the servers' certificates must carry (default: the host connected to; one name for the whole cluster is simplest)", HelpName = "NAME" };
    private readonly bool _listens;

    public TlsArguments(Command command, bool listens)
    {
        _listens = listens;
        if (listens)
        {
            command.Options.Add(_cert);
            command.Options.Add(_key);
        }

        command.Options.Add(_tls);
        command.Options.Add(_ca);
        command.Options.Add(_name);
    }

    /// <summary>The listener's certificate, or null for plain TCP.</summary>
    public X509Certificate2? Certificate(ParseResult parse)
    {
        if (!_listens || parse.GetValue(_cert) is not { } path)
        {
            return parse.GetValue(_key) is null ? null : throw new CliException("--tls-key needs --tls-cert");
        }

        try
        {
            var password = Environment.GetEnvironmentVariable(PasswordVariable);
            return TlsCertificates.LoadServerCertificate(path, parse.GetValue(_key), string.IsNullOrEmpty(password) ? null : password);
        }
        catch (TlsConfigurationException ex)
        {
            throw new CliException($"--tls-cert: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The certificate files as given, for child storage nodes to serve with the same certificate and trust (null when
    /// no --tls-cert was given). Paths are made absolute: a child may run elsewhere.
    /// </summary>
    public Pocket.Controller.Provisioning.NodeTlsFiles? NodeFiles(ParseResult parse) =>
        !_listens || parse.GetValue(_cert) is not { } cert
            ? null
            : new Pocket.Controller.Provisioning.NodeTlsFiles(
                Path.GetFullPath(cert),
                parse.GetValue(_key) is { } key ? Path.GetFullPath(key) : null,
                parse.GetValue(_ca) is { } ca ? Path.GetFullPath(ca) : null,
                parse.GetValue(_name));

    /// <summary>How an https:// server's certificate is checked: against --tls-ca as well as the system's roots, or the system's alone.</summary>
    public System.Net.Security.RemoteCertificateValidationCallback? HttpsValidation(ParseResult parse) => Client(parse, "localhost").Validation;

    /// <summary>The connection settings for servers at <paramref name="defaultName"/>; TLS only when asked for.</summary>
    public FrameConnectionOptions Connection(ParseResult parse, string defaultName)
    {
        var (host, validation) = Client(parse, defaultName);
        return new FrameConnectionOptions { TlsHost = host, CertificateValidation = validation };
    }

    /// <summary>The same for a <see cref="PocketClient"/>.</summary>
    public PocketClientOptions ClientOptions(ParseResult parse, string defaultName)
    {
        var (host, validation) = Client(parse, defaultName);
        return new PocketClientOptions { TlsHost = host, CertificateValidation = validation };
    }

    private (string? Host, System.Net.Security.RemoteCertificateValidationCallback? Validation) Client(ParseResult parse, string defaultName)
    {
        var ca = parse.GetValue(_ca);
        var name = parse.GetValue(_name);
        if (!parse.GetValue(_tls) && ca is null)
        {
            return name is null ? (null, null) : throw new CliException("--tls-name needs --tls or --tls-ca");
        }

        try
        {
            return (name ?? defaultName, ca is null ? null : TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(ca)));
        }
        catch (TlsConfigurationException ex)
        {
            throw new CliException($"--tls-ca: {ex.Message}", ex);
        }
    }
}
