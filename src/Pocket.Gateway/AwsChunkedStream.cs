using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Pocket.Gateway;

/// <summary>
/// Decodes an aws-chunked body (<c>STREAMING-*</c> payloads of the AWS SDKs): "hex-size[;chunk-signature=sig]\r\n",
/// the data, "\r\n", ..., a zero-size chunk, then optional trailing headers ("x-amz-checksum-crc32:...") and an
/// empty line. With signed chunks every chunk signature, and a trailer signature when sent, is checked against the
/// chain that starts at the request's seed signature; a bad one fails the read, so the object is never committed.
/// Trailing checksums themselves (CRC32 and friends) are not recomputed: the chunk signatures already cover the data.
/// </summary>
internal sealed class AwsChunkedStream : ReadOnlyForwardStream
{
    private const int MaxLine = 4096;

    private readonly Stream _inner;
    private readonly AuthResult? _signing;
    private readonly byte[] _buffer = new byte[64 << 10];
    private readonly IncrementalHash? _chunkHash;
    private int _start;
    private int _end;
    private long _remaining;
    private string? _chunkSignature;
    private string _previousSignature;
    private bool _inData;
    private bool _done;

    /// <param name="inner">The raw request body.</param>
    /// <param name="signing">The verified request when chunks are signed; null for unsigned chunks.</param>
    public AwsChunkedStream(Stream inner, AuthResult? signing)
    {
        _inner = inner;
        _signing = signing;
        _previousSignature = signing?.Signature ?? string.Empty;
        _chunkHash = signing is null ? null : IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    }

    /// <summary>Trailing headers the client sent after the last chunk.</summary>
    public IReadOnlyDictionary<string, string> Trailers => _trailers;

    private readonly Dictionary<string, string> _trailers = new(StringComparer.OrdinalIgnoreCase);

    public override async ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        while (!_done)
        {
            if (!_inData)
            {
                await ReadChunkHeaderAsync(cancellationToken).ConfigureAwait(false);
                continue;
            }

            if (_remaining == 0)
            {
                await ExpectCrlfAsync(cancellationToken).ConfigureAwait(false);
                VerifyChunk();
                _inData = false;
                continue;
            }

            if (destination.Length == 0)
            {
                return 0;
            }

            if (_start == _end && !await FillAsync(cancellationToken).ConfigureAwait(false))
            {
                throw Truncated();
            }

            var n = (int)Math.Min(Math.Min(_remaining, _end - _start), destination.Length);
            var data = _buffer.AsSpan(_start, n);
            data.CopyTo(destination.Span);
            _chunkHash?.AppendData(data);
            _start += n;
            _remaining -= n;
            return n;
        }

        return 0;
    }

    private async ValueTask ReadChunkHeaderAsync(CancellationToken cancellationToken)
    {
        var line = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
        var semicolon = line.IndexOf(';', StringComparison.Ordinal);
        var sizeText = semicolon < 0 ? line : line[..semicolon];
        if (!long.TryParse(sizeText.Trim(), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var size) || size < 0)
        {
            throw Malformed($"chunk header '{Shorten(line)}' does not start with a hex size");
        }

        _chunkSignature = null;
        if (semicolon >= 0)
        {
            foreach (var extension in line[(semicolon + 1)..].Split(';', StringSplitOptions.TrimEntries))
            {
                if (extension.StartsWith("chunk-signature=", StringComparison.Ordinal))
                {
                    _chunkSignature = extension["chunk-signature=".Length..];
                }
            }
        }

        if (_signing is not null && _chunkSignature is null)
        {
            throw new S3Exception(S3Error.SignatureDoesNotMatch, "A chunk of a signed aws-chunked body has no chunk-signature.");
        }

        if (size > 0)
        {
            _remaining = size;
            _inData = true;
            return;
        }

        // The last chunk: check its signature (over no data), then read trailing headers up to the empty line.
        VerifyChunk();
        string? trailerSignature = null;
        var trailerText = new StringBuilder();
        while (true)
        {
            var trailer = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
            if (trailer.Length == 0)
            {
                break;
            }

            var colon = trailer.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw Malformed($"trailing header '{Shorten(trailer)}' is not name:value");
            }

            var name = trailer[..colon].Trim();
            var value = trailer[(colon + 1)..].Trim();
            if (name.Equals("x-amz-trailer-signature", StringComparison.OrdinalIgnoreCase))
            {
                trailerSignature = value;
                continue;
            }

            _trailers[name] = value;
            trailerText.Append(name.ToLowerInvariant()).Append(':').Append(value).Append('\n');
        }

        if (_signing is not null && _signing.PayloadHash == SigV4.StreamingSignedTrailer)
        {
            if (trailerSignature is null)
            {
                throw new S3Exception(S3Error.SignatureDoesNotMatch, "The signed trailer of an aws-chunked body has no x-amz-trailer-signature.");
            }

            var expected = SigV4.Sign(_signing.SigningKey, SigV4.TrailerStringToSign(_signing.Timestamp, _signing.Scope, _previousSignature, SigV4.Sha256Hex(trailerText.ToString())));
            if (!SigV4.SignaturesEqual(expected, trailerSignature))
            {
                throw new S3Exception(S3Error.SignatureDoesNotMatch, "The trailer signature of the aws-chunked body does not match.");
            }
        }

        _done = true;
    }

    private void VerifyChunk()
    {
        if (_signing is null || _chunkHash is null)
        {
            return;
        }

        var dataHash = SigV4.Hex(_chunkHash.GetHashAndReset());
        var expected = SigV4.Sign(_signing.SigningKey, SigV4.ChunkStringToSign(_signing.Timestamp, _signing.Scope, _previousSignature, dataHash));
        if (!SigV4.SignaturesEqual(expected, _chunkSignature ?? string.Empty))
        {
            throw new S3Exception(S3Error.SignatureDoesNotMatch, "The chunk signature of the aws-chunked body does not match.");
        }

        _previousSignature = expected;
    }

    private async ValueTask ExpectCrlfAsync(CancellationToken cancellationToken)
    {
        var line = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
        if (line.Length != 0)
        {
            throw Malformed("a chunk's data is longer than its size");
        }
    }

    private async ValueTask<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var span = _buffer.AsSpan(_start, _end - _start);
            var lf = span.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                var length = lf > 0 && span[lf - 1] == (byte)'\r' ? lf - 1 : lf;
                var line = Encoding.ASCII.GetString(span[..length]);
                _start += lf + 1;
                return line;
            }

            if (_end - _start >= MaxLine)
            {
                throw Malformed("a chunk header or trailer line is longer than 4 KiB");
            }

            if (!await FillAsync(cancellationToken).ConfigureAwait(false))
            {
                throw Truncated();
            }
        }
    }

    private async ValueTask<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }

        var n = await _inner.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
        _end += n;
        return n > 0;
    }

    private static S3Exception Truncated() => new(S3Error.IncompleteBody, "The aws-chunked body ended before its last chunk.");

    private static S3Exception Malformed(string what) => new(S3Error.InvalidRequest, $"Malformed aws-chunked body: {what}.");

    private static string Shorten(string text) => text.Length <= 80 ? text : text[..80] + "...";

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _chunkHash?.Dispose();
        }

        base.Dispose(disposing);
    }
}
