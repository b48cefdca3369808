using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Time.Testing;

namespace Pocket.Gateway.Tests;

/// <summary>The signature examples of the S3 API reference, checked against the gateway's verifier and chunk decoder.</summary>
public sealed class SigV4VectorTests
{
    private const string AccessKey = "AKIAIOSFODNN7EXAMPLE";
    private const string Secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    private const string Timestamp = "20130524T000000Z";
    private const string Scope = "20130524/us-east-1/s3/aws4_request";

    private static Authenticator NewAuthenticator(DateTimeOffset? now = null)
    {
        var options = new GatewayOptions
        {
            ControllerUrl = new Uri("http://127.0.0.1:1"),
            Users = new Dictionary<string, string> { [AccessKey] = Secret },
            TimeProvider = new FakeTimeProvider(now ?? new DateTimeOffset(2013, 5, 24, 0, 0, 0, TimeSpan.Zero)),
        };
        return new Authenticator(options, (key, _) => ValueTask.FromResult<(string, Principal)?>(options.Users.TryGetValue(key, out var secret) ? (secret, new Principal(key, null)) : null));
    }

    private static S3Request Request(string method, string rawTarget, string host, params (string Name, string Value)[] headers)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = method;
        context.Features.Get<IHttpRequestFeature>()!.RawTarget = rawTarget;
        context.Request.Headers.Host = host;
        foreach (var (name, value) in headers)
        {
            context.Request.Headers[name] = value;
        }

        return S3Request.Parse(context, "s3.amazonaws.com", "test");
    }

    [Fact]
    public async Task GetObjectExampleVerifies()
    {
        var request = Request("GET", "/test.txt", "examplebucket.s3.amazonaws.com",
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", SigV4.EmptySha256),
            ("x-amz-date", Timestamp),
            ("Authorization", $"AWS4-HMAC-SHA256 Credential={AccessKey}/{Scope},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
        Assert.Equal("examplebucket", request.Bucket);
        Assert.Equal("test.txt", request.Key);
        var result = await NewAuthenticator().AuthenticateAsync(request);
        Assert.Equal(AccessKey, result.Principal.AccessKey);
        Assert.Equal(SigV4.EmptySha256, result.ExpectedSha256);
    }

    [Fact]
    public async Task ListObjectsExampleWithAQueryVerifies()
    {
        var request = Request("GET", "/?max-keys=2&prefix=J", "examplebucket.s3.amazonaws.com",
            ("x-amz-content-sha256", SigV4.EmptySha256),
            ("x-amz-date", Timestamp),
            ("Authorization", $"AWS4-HMAC-SHA256 Credential={AccessKey}/{Scope},SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
        await NewAuthenticator().AuthenticateAsync(request);
    }

    [Fact]
    public async Task AChangedHeaderOrAnotherDayFails()
    {
        var tampered = Request("GET", "/test.txt", "examplebucket.s3.amazonaws.com",
            ("Range", "bytes=0-10"),
            ("x-amz-content-sha256", SigV4.EmptySha256),
            ("x-amz-date", Timestamp),
            ("Authorization", $"AWS4-HMAC-SHA256 Credential={AccessKey}/{Scope},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
        Assert.Equal(S3Error.SignatureDoesNotMatch, (await Assert.ThrowsAsync<S3Exception>(async () => await NewAuthenticator().AuthenticateAsync(tampered))).Error);

        var late = Request("GET", "/test.txt", "examplebucket.s3.amazonaws.com",
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", SigV4.EmptySha256),
            ("x-amz-date", Timestamp),
            ("Authorization", $"AWS4-HMAC-SHA256 Credential={AccessKey}/{Scope},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
        var error = await Assert.ThrowsAsync<S3Exception>(async () => await NewAuthenticator(new DateTimeOffset(2013, 5, 25, 0, 0, 0, TimeSpan.Zero)).AuthenticateAsync(late));
        Assert.Equal(S3Error.RequestTimeTooSkewed, error.Error);
    }

    private static byte[] ChunkedBody(string[] signatures, string trailer)
    {
        using var body = new MemoryStream();
        var sizes = new[] { 65536, 1024, 0 };
        for (var i = 0; i < 3; i++)
        {
            body.Write(Encoding.ASCII.GetBytes($"{sizes[i]:x};chunk-signature={signatures[i]}\r\n"));
            body.Write(Enumerable.Repeat((byte)'a', sizes[i]).ToArray());
            if (i < 2)
            {
                body.Write("\r\n"u8);
            }
        }

        body.Write(Encoding.ASCII.GetBytes(trailer));
        body.Write("\r\n"u8);
        return body.ToArray();
    }

    private static async Task<byte[]> DecodeAsync(byte[] body, AuthResult auth)
    {
        // Small reads on both sides, so chunk boundaries fall everywhere.
        using var decoder = new AwsChunkedStream(new TrickleStream(body), auth);
        using var output = new MemoryStream();
        var buffer = new byte[1000];
        int n;
        while ((n = await decoder.ReadAsync(buffer)) > 0)
        {
            output.Write(buffer, 0, n);
        }

        return output.ToArray();
    }

    [Fact]
    public async Task ChunkedUploadExampleVerifiesSeedAndEveryChunk()
    {
        var request = Request("PUT", "/examplebucket/chunkObject.txt", "s3.amazonaws.com",
            ("x-amz-date", Timestamp),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", SigV4.StreamingSigned),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("Content-Length", "66824"),
            ("Authorization", $"AWS4-HMAC-SHA256 Credential={AccessKey}/{Scope},SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"));
        var auth = await NewAuthenticator().AuthenticateAsync(request);
        Assert.True(auth.SignedChunks);

        string[] signatures =
        [
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ];
        var decoded = await DecodeAsync(ChunkedBody(signatures, string.Empty), auth);
        Assert.Equal(66560, decoded.Length);
        Assert.All(decoded, b => Assert.Equal((byte)'a', b));

        // One wrong chunk signature fails the read.
        var bad = (string[])signatures.Clone();
        bad[1] = bad[1].Replace('0', '1');
        var error = await Assert.ThrowsAsync<S3Exception>(() => DecodeAsync(ChunkedBody(bad, string.Empty), auth));
        Assert.Equal(S3Error.SignatureDoesNotMatch, error.Error);
    }

    [Fact]
    public async Task ChunkedUploadWithSignedTrailerExampleVerifies()
    {
        var key = SigV4.SigningKey(Secret, "20130524", "us-east-1", "s3");
        var auth = new AuthResult(new Principal(AccessKey, null), SigV4.StreamingSignedTrailer, key, Timestamp, Scope, "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e");
        string[] signatures =
        [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        ];
        var trailer = "x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n";
        Assert.Equal(66560, (await DecodeAsync(ChunkedBody(signatures, trailer), auth)).Length);

        var badTrailer = trailer.Replace("sOO8", "sOO9", StringComparison.Ordinal);
        var error = await Assert.ThrowsAsync<S3Exception>(() => DecodeAsync(ChunkedBody(signatures, badTrailer), auth));
        Assert.Equal(S3Error.SignatureDoesNotMatch, error.Error);
    }

    /// <summary>Hands out at most 777 bytes per read.</summary>
    private sealed class TrickleStream(byte[] data) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            base.ReadAsync(buffer[..Math.Min(buffer.Length, 777)], cancellationToken);
    }
}
