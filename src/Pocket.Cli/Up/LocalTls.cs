using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pocket.Networking;

namespace Pocket.Cli.Up;

/// <summary>
/// The self-signed certificate of `pocket up --tls`, for a local try of TLS: made fresh at each start (ECDSA P-256,
/// valid for 30 days, names localhost and 127.0.0.1), written beside the cluster's state (cert.pem with the key, 0600;
/// ca.pem with the certificate only, for clients to trust). Every role serves with it and trusts it.
/// </summary>
internal sealed record LocalTls(string CertificatePath, string TrustPath, X509Certificate2 Certificate, RemoteCertificateValidationCallback Validation) : IDisposable
{
    /// <summary>The name every role's certificate carries and clients check.</summary>
    public const string Name = "localhost";

    public static LocalTls Create(string directory)
    {
        Directory.CreateDirectory(directory);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=pocket up (self-signed)", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(Name);
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, 0, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));

        var certificatePath = Path.Combine(directory, "cert.pem");
        var trustPath = Path.Combine(directory, "ca.pem");
        WritePrivate(certificatePath, certificate.ExportCertificatePem() + "\n" + key.ExportPkcs8PrivateKeyPem() + "\n");
        File.WriteAllText(trustPath, certificate.ExportCertificatePem() + "\n");
        return new LocalTls(
            certificatePath,
            trustPath,
            TlsCertificates.LoadServerCertificate(certificatePath),
            TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(trustPath)));
    }

    public void Dispose() => Certificate.Dispose();

    private static void WritePrivate(string path, string text)
    {
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var stream = new FileStream(path, options);
        using var writer = new StreamWriter(stream);
        writer.Write(text);
    }
}
