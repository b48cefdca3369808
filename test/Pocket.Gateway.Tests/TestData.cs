using System.Net;
using System.Security.Cryptography;
using Amazon.S3;

namespace Pocket.Gateway.Tests;

internal static class TestData
{
    public static byte[] Random(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static string Md5Hex(byte[] data) => Convert.ToHexStringLower(MD5.HashData(data));

    public static string Sha256Hex(Stream stream) => Convert.ToHexStringLower(SHA256.HashData(stream));

    public static async Task<byte[]> ReadAllAsync(Stream stream)
    {
        using var buffer = new MemoryStream();
        await stream.CopyToAsync(buffer);
        return buffer.ToArray();
    }

    /// <summary>Runs <paramref name="action"/> and asserts the S3 error code and HTTP status the SDK reports.</summary>
    public static async Task<AmazonS3Exception> ExpectErrorAsync(Func<Task> action, string code, HttpStatusCode status)
    {
        var ex = await Assert.ThrowsAnyAsync<AmazonS3Exception>(action);
        Assert.Equal(status, ex.StatusCode);
        Assert.Equal(code, ex.ErrorCode);
        return ex;
    }

    /// <summary>A stream of pseudo-random bytes that cannot seek: the SDK must stream it (aws-chunked), as for a pipe.</summary>
    public sealed class GeneratedStream(long length, int seed) : Stream
    {
        private readonly Random _random = new(seed);
        private long _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = (int)Math.Min(count, length - _position);
            _random.NextBytes(buffer.AsSpan(offset, n));
            _position += n;
            return n;
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        /// <summary>The SHA-256 of the bytes a stream with this length and seed produces.</summary>
        public static string Sha256(long length, int seed)
        {
            using var stream = new GeneratedStream(length, seed);
            return Sha256Hex(stream);
        }
    }
}
