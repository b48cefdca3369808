using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Pocket.Gateway;

/// <summary>The pieces of AWS Signature Version 4 that S3 uses: encoding, hashing, the signing key and the strings to sign.</summary>
internal static class SigV4
{
    public const string Algorithm = "AWS4-HMAC-SHA256";
    public const string UnsignedPayload = "UNSIGNED-PAYLOAD";
    public const string StreamingSigned = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    public const string StreamingSignedTrailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
    public const string StreamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
    public const string TimestampFormat = "yyyyMMdd'T'HHmmss'Z'";

    /// <summary>Hex SHA-256 of the empty string, part of every chunk's string to sign.</summary>
    public const string EmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    public static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    public static string Sha256Hex(string text) => Hex(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    public static byte[] SigningKey(string secret, string date, string region, string service)
    {
        var key = HMACSHA256.HashData(Encoding.UTF8.GetBytes("AWS4" + secret), Encoding.UTF8.GetBytes(date));
        key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(region));
        key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(service));
        return HMACSHA256.HashData(key, "aws4_request"u8);
    }

    public static string Sign(byte[] signingKey, string stringToSign) =>
        Hex(HMACSHA256.HashData(signingKey, Encoding.UTF8.GetBytes(stringToSign)));

    public static string StringToSign(string timestamp, string scope, string canonicalRequest) =>
        $"{Algorithm}\n{timestamp}\n{scope}\n{Sha256Hex(canonicalRequest)}";

    public static string ChunkStringToSign(string timestamp, string scope, string previousSignature, string chunkSha256) =>
        $"{Algorithm}-PAYLOAD\n{timestamp}\n{scope}\n{previousSignature}\n{EmptySha256}\n{chunkSha256}";

    public static string TrailerStringToSign(string timestamp, string scope, string previousSignature, string trailerSha256) =>
        $"{Algorithm}-TRAILER\n{timestamp}\n{scope}\n{previousSignature}\n{trailerSha256}";

    /// <summary>Constant-time comparison of two hex signatures.</summary>
    public static bool SignaturesEqual(string expected, string provided) =>
        expected.Length == provided.Length &&
        CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(provided.ToLowerInvariant()));

    /// <summary>SigV4's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ as %XX (upper-case hex); '/' kept only in paths.</summary>
    public static string UriEncode(string value, bool keepSlash)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        var builder = new StringBuilder(bytes.Length * 3 / 2);
        foreach (var b in bytes)
        {
            if (b is (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'a' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'_' or (byte)'.' or (byte)'~'
                || (keepSlash && b == (byte)'/'))
            {
                builder.Append((char)b);
            }
            else
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return builder.ToString();
    }

    /// <summary>
    /// Percent-decodes a URL component as UTF-8 bytes. '+' stays '+': S3 clients encode spaces as %20, and SigV4 signs
    /// the decoded value re-encoded, so the two agree.
    /// </summary>
    public static string PercentDecode(ReadOnlySpan<char> text)
    {
        if (!text.Contains('%'))
        {
            return text.ToString();
        }

        var bytes = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(text.Length));
        try
        {
            var n = 0;
            for (var i = 0; i < text.Length; i++)
            {
                var c = text[i];
                if (c == '%' && i + 2 < text.Length && IsHex(text[i + 1]) && IsHex(text[i + 2]))
                {
                    bytes[n++] = (byte)((HexValue(text[i + 1]) << 4) | HexValue(text[i + 2]));
                    i += 2;
                }
                else if (c < 0x80)
                {
                    bytes[n++] = (byte)c;
                }
                else
                {
                    n += Encoding.UTF8.GetBytes(text.Slice(i, char.IsHighSurrogate(c) && i + 1 < text.Length ? 2 : 1), bytes.AsSpan(n));
                    if (char.IsHighSurrogate(c) && i + 1 < text.Length)
                    {
                        i++;
                    }
                }
            }

            return Encoding.UTF8.GetString(bytes, 0, n);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    private static bool IsHex(char c) => char.IsAsciiHexDigit(c);

    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
