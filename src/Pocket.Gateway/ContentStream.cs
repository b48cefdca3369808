using System.Security.Cryptography;

namespace Pocket.Gateway;

/// <summary>
/// The payload of a PutObject or UploadPart on its way into Pocket: hashes it with MD5 for the ETag (and with
/// SHA-256 when the client signed the payload), counts it against the declared length and the size limit, and
/// fails the read that ends the stream when anything is off. Pocket commits an object only after the source
/// stream ends cleanly, so a failed check leaves nothing behind.
/// </summary>
internal sealed class ContentStream : ReadOnlyForwardStream
{
    private readonly Stream _inner;
    private readonly long? _expectedLength;
    private readonly long _maxLength;
    private readonly string? _expectedSha256;
    private readonly byte[]? _expectedMd5;
    private readonly IncrementalHash _md5 = IncrementalHash.CreateHash(HashAlgorithmName.MD5);
    private readonly IncrementalHash? _sha256;
    private byte[]? _md5Result;

    public ContentStream(Stream inner, long? expectedLength, long maxLength, string? expectedSha256, byte[]? expectedMd5)
    {
        _inner = inner;
        _expectedLength = expectedLength;
        _maxLength = maxLength;
        _expectedSha256 = expectedSha256;
        _expectedMd5 = expectedMd5;
        _sha256 = expectedSha256 is null ? null : IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    }

    /// <summary>Bytes read so far.</summary>
    public long BytesRead { get; private set; }

    /// <summary>MD5 of the whole payload; only once the stream has ended.</summary>
    public byte[] Md5 => _md5Result ?? throw new InvalidOperationException("the payload has not been read to its end");

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_md5Result is not null)
        {
            return 0;
        }

        // At the declared length the inner stream must end too; reading it to its end also lets an aws-chunked
        // decoder check the last chunk's signature and the trailer.
        if (_expectedLength is { } expected && BytesRead == expected)
        {
            var scratch = new byte[1];
            if (await ReadInnerAsync(scratch, cancellationToken).ConfigureAwait(false) != 0)
            {
                throw new S3Exception(S3Error.InvalidRequest, "The request body is longer than its declared length.");
            }

            Finish();
            return 0;
        }

        if (buffer.Length == 0)
        {
            return 0;
        }

        if (_expectedLength is { } limit && buffer.Length > limit - BytesRead)
        {
            buffer = buffer[..(int)(limit - BytesRead)];
        }

        var n = await ReadInnerAsync(buffer, cancellationToken).ConfigureAwait(false);
        if (n == 0)
        {
            Finish();
            return 0;
        }

        BytesRead += n;
        if (BytesRead > _maxLength)
        {
            throw new S3Exception(S3Error.EntityTooLarge, $"Your proposed upload exceeds the maximum allowed size of {_maxLength} bytes.");
        }

        var data = buffer.Span[..n];
        _md5.AppendData(data);
        _sha256?.AppendData(data);
        return n;
    }

    private async ValueTask<int> ReadInnerAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            return await _inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException ex)
        {
            throw new S3Exception(S3Error.IncompleteBody, $"The request body could not be read: {ex.Message}", ex);
        }
    }

    private void Finish()
    {
        if (_expectedLength is { } expected && BytesRead != expected)
        {
            throw new S3Exception(S3Error.IncompleteBody, $"You did not provide the number of bytes specified by the Content-Length HTTP header: {BytesRead} of {expected}.");
        }

        var md5 = _md5.GetHashAndReset();
        if (_expectedMd5 is not null && !CryptographicOperations.FixedTimeEquals(md5, _expectedMd5))
        {
            throw new S3Exception(S3Error.BadDigest, "The Content-MD5 you specified did not match what we received.");
        }

        if (_sha256 is not null && SigV4.Hex(_sha256.GetHashAndReset()) != _expectedSha256)
        {
            throw new S3Exception(S3Error.ContentSha256Mismatch, "The provided 'x-amz-content-sha256' header does not match what was computed.");
        }

        _md5Result = md5;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _md5.Dispose();
            _sha256?.Dispose();
        }

        base.Dispose(disposing);
    }
}
