using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Pocket.Networking;

/// <summary>A certificate or trust file that cannot be used; the message names the file and what is wrong.</summary>
public sealed class TlsConfigurationException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Loads listener certificates and trusted roots from files, and checks server certificates against them.</summary>
public static class TlsCertificates
{
    /// <summary>
    /// A server certificate with its private key: PKCS#12 (.pfx, .p12; <paramref name="password"/> if it has one), or
    /// PEM with the certificate and its key in <paramref name="path"/> or in <paramref name="keyPath"/>.
    /// </summary>
    /// <exception cref="TlsConfigurationException">The file cannot be read, holds no certificate, no key, or a key of another certificate.</exception>
    public static X509Certificate2 LoadServerCertificate(string path, string? keyPath = null, string? password = null)
    {
        var text = ReadHead(path, "certificate");
        X509Certificate2 certificate;
        try
        {
            if (text.Contains("-----BEGIN", StringComparison.Ordinal))
            {
                if (keyPath is not null)
                {
                    ReadHead(keyPath, "key");
                }

                using var pem = X509Certificate2.CreateFromPemFile(path, keyPath);

                // A PEM key is ephemeral; SslStream wants one it can hand to the platform, as PKCS#12 gives.
                certificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
            }
            else
            {
                certificate = X509CertificateLoader.LoadPkcs12FromFile(path, password);
            }
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            // A PEM file without a key, or a key of another certificate, is an ArgumentException.
            var key = keyPath is null ? string.Empty : $" with key '{keyPath}'";
            throw new TlsConfigurationException($"TLS certificate '{path}'{key} cannot be used: {ex.Message} (give PKCS#12, or PEM with the certificate and its matching private key)", ex);
        }

        if (!certificate.HasPrivateKey)
        {
            certificate.Dispose();
            throw new TlsConfigurationException($"TLS certificate '{path}' has no private key: a listener needs one (PEM: add the key to the file or give it separately)");
        }

        return certificate;
    }

    /// <summary>The certificates of a PEM (or DER) file to trust as roots: a private CA, or a self-signed server certificate.</summary>
    /// <exception cref="TlsConfigurationException">The file cannot be read or holds no certificate.</exception>
    public static X509Certificate2Collection LoadTrusted(string path)
    {
        var text = ReadHead(path, "CA");
        var roots = new X509Certificate2Collection();
        try
        {
            if (text.Contains("-----BEGIN", StringComparison.Ordinal))
            {
                roots.ImportFromPemFile(path);
            }
            else
            {
                roots.Add(X509CertificateLoader.LoadCertificateFromFile(path));
            }
        }
        catch (CryptographicException ex)
        {
            throw new TlsConfigurationException($"TLS CA '{path}' cannot be read: {ex.Message}", ex);
        }

        return roots.Count > 0 ? roots : throw new TlsConfigurationException($"TLS CA '{path}' holds no certificate");
    }

    /// <summary>
    /// Accepts a server certificate that the system trusts, or that chains to one of <paramref name="roots"/>; the name
    /// must match either way.
    /// </summary>
    public static RemoteCertificateValidationCallback TrustRoots(X509Certificate2Collection roots) => (_, certificate, _, errors) =>
    {
        if (errors == SslPolicyErrors.None)
        {
            return true;
        }

        if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateNotAvailable)) != 0)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
    };

    // The start of the file: to tell PEM from binary, and to turn a missing or unreadable file into a plain message.
    private static string ReadHead(string path, string what)
    {
        try
        {
            using var file = File.OpenRead(path);
            var head = new byte[Math.Min(file.Length, 4096)];
            file.ReadExactly(head);
            return System.Text.Encoding.ASCII.GetString(head);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new TlsConfigurationException($"cannot read TLS {what} file '{path}': {ex.Message}", ex);
        }
    }
}
