using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Xml.Linq;
using Amazon.S3.Model;

namespace Pocket.Gateway.Tests;

/// <summary>Requests the SDK would never send: unsigned, half-signed, expired, hand-chunked.</summary>
public sealed class RawHttpTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>, IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };

    private GatewayHarness H => fixture.Harness;

    private RawSigner Signer => new(H.Gateway.Url, GatewayHarness.AccessKey, GatewayHarness.SecretKey);

    public void Dispose() => _http.Dispose();

    private async Task<string> NewBucketAsync(string stem)
    {
        var name = GatewayHarness.NewBucketName(stem);
        await H.S3.PutBucketAsync(new PutBucketRequest { BucketName = name });
        return name;
    }

    private static async Task<XElement> ErrorAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"{(int)response.StatusCode}: {text}");
        Assert.Equal("application/xml", response.Content.Headers.ContentType?.MediaType);
        var error = XElement.Parse(text);
        Assert.Equal("Error", error.Name.LocalName);
        Assert.Equal(code, error.Element("Code")?.Value);
        Assert.False(string.IsNullOrEmpty(error.Element("Message")?.Value));
        Assert.False(string.IsNullOrEmpty(error.Element("RequestId")?.Value));
        Assert.True(response.Headers.Contains("x-amz-request-id"));
        return error;
    }

    [Fact]
    public async Task UnsignedRequestsAreRefusedWith403Xml()
    {
        var bucket = await NewBucketAsync("unsigned");
        await H.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "k", ContentBody = "secret" });

        using var get = await _http.GetAsync(new Uri(H.Gateway.Url, $"/{bucket}/k"));
        var error = await ErrorAsync(get, HttpStatusCode.Forbidden, "AccessDenied");
        Assert.Equal($"/{bucket}/k", error.Element("Resource")?.Value);

        using var put = await _http.PutAsync(new Uri(H.Gateway.Url, $"/{bucket}/k"), new StringContent("overwritten"));
        await ErrorAsync(put, HttpStatusCode.Forbidden, "AccessDenied");
        using var list = await _http.GetAsync(H.Gateway.Url);
        await ErrorAsync(list, HttpStatusCode.Forbidden, "AccessDenied");

        using var v2 = new HttpRequestMessage(HttpMethod.Get, new Uri(H.Gateway.Url, $"/{bucket}/k"));
        v2.Headers.TryAddWithoutValidation("Authorization", "AWS AKIDPOCKETTEST:c2lnbmF0dXJl");
        using var v2Response = await _http.SendAsync(v2);
        await ErrorAsync(v2Response, HttpStatusCode.BadRequest, "InvalidRequest");

        using var unsignedHead = await _http.SendAsync(new HttpRequestMessage(HttpMethod.Head, new Uri(H.Gateway.Url, $"/{bucket}/k")));
        Assert.Equal(HttpStatusCode.Forbidden, unsignedHead.StatusCode);

        // The object is untouched.
        using var ok = await _http.SendAsync(Signer.Sign(HttpMethod.Get, $"/{bucket}/k", RawSignerHash.Empty));
        Assert.Equal("secret", await ok.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task SignatureErrorsNameTheirCause()
    {
        var bucket = await NewBucketAsync("sigerrors");

        // A signed payload hash that does not match the body.
        var body = Encoding.UTF8.GetBytes("the real body");
        using (var mismatch = await _http.SendAsync(Signer.Sign(HttpMethod.Put, $"/{bucket}/k", RawSignerHash.Of(Encoding.UTF8.GetBytes("another body")), new ByteArrayContent(body))))
        {
            await ErrorAsync(mismatch, HttpStatusCode.BadRequest, "XAmzContentSHA256Mismatch");
        }

        using (var missing = await _http.SendAsync(Signer.Sign(HttpMethod.Get, $"/{bucket}/k", RawSignerHash.Empty)))
        {
            await ErrorAsync(missing, HttpStatusCode.NotFound, "NoSuchKey");
        }

        // A clock an hour off.
        using (var skewed = await _http.SendAsync(Signer.Sign(HttpMethod.Get, $"/{bucket}/k", RawSignerHash.Empty, at: DateTimeOffset.UtcNow.AddHours(-1))))
        {
            await ErrorAsync(skewed, HttpStatusCode.Forbidden, "RequestTimeTooSkewed");
        }

        // The right signature over a header that was then changed.
        var signed = Signer.Sign(HttpMethod.Get, $"/{bucket}/k", RawSignerHash.Empty, headers: new Dictionary<string, string> { ["x-amz-meta-tag"] = "a" });
        signed.Headers.Remove("x-amz-meta-tag");
        signed.Headers.TryAddWithoutValidation("x-amz-meta-tag", "b");
        using (var tampered = await _http.SendAsync(signed))
        {
            var error = await ErrorAsync(tampered, HttpStatusCode.Forbidden, "SignatureDoesNotMatch");
            Assert.Contains("x-amz-meta-tag:b", error.Element("CanonicalRequest")?.Value, StringComparison.Ordinal);
        }

        // The Content-MD5 check.
        var wrongMd5 = Signer.Sign(HttpMethod.Put, $"/{bucket}/k", "UNSIGNED-PAYLOAD", new ByteArrayContent(body));
        wrongMd5.Content!.Headers.ContentMD5 = MD5.HashData(Encoding.UTF8.GetBytes("not the body"));
        using (var badDigest = await _http.SendAsync(wrongMd5))
        {
            await ErrorAsync(badDigest, HttpStatusCode.BadRequest, "BadDigest");
        }

        await Assert.ThrowsAnyAsync<Amazon.S3.AmazonS3Exception>(() => H.S3.GetObjectMetadataAsync(bucket, "k"));
    }

    [Fact]
    public async Task PresignedLinksExpire()
    {
        var bucket = await NewBucketAsync("expiry");
        await H.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "k", ContentBody = "v" });
        using (var fresh = await _http.GetAsync(Signer.Presign(HttpMethod.Get, $"/{bucket}/k", TimeSpan.FromMinutes(10), DateTimeOffset.UtcNow)))
        {
            Assert.Equal("v", await fresh.Content.ReadAsStringAsync());
        }

        using var expired = await _http.GetAsync(Signer.Presign(HttpMethod.Get, $"/{bucket}/k", TimeSpan.FromMinutes(10), DateTimeOffset.UtcNow.AddHours(-2)));
        var error = await ErrorAsync(expired, HttpStatusCode.Forbidden, "AccessDenied");
        Assert.Contains("expired", error.Element("Message")?.Value, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnsignedAwsChunkedPayloadWithATrailerIsDecoded()
    {
        var bucket = await NewBucketAsync("chunked");
        var data = TestData.Random(200_000, 7);
        using var body = new MemoryStream();
        foreach (var chunk in data.Chunk(65_536))
        {
            body.Write(Encoding.ASCII.GetBytes($"{chunk.Length:x}\r\n"));
            body.Write(chunk);
            body.Write("\r\n"u8);
        }

        body.Write("0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"u8);
        var request = Signer.Sign(
            HttpMethod.Put,
            $"/{bucket}/chunked object",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            new ByteArrayContent(body.ToArray()),
            headers: new Dictionary<string, string>
            {
                ["x-amz-decoded-content-length"] = data.Length.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["x-amz-trailer"] = "x-amz-checksum-crc32",
            });
        request.Content!.Headers.TryAddWithoutValidation("Content-Encoding", "aws-chunked");
        using (var response = await _http.SendAsync(request))
        {
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
            Assert.Equal($"\"{TestData.Md5Hex(data)}\"", response.Headers.ETag?.Tag);
        }

        using var get = await H.S3.GetObjectAsync(bucket, "chunked object");
        Assert.Equal(data, await TestData.ReadAllAsync(get.ResponseStream));

        // A body shorter than its decoded length is refused, and leaves nothing behind.
        var shortRequest = Signer.Sign(
            HttpMethod.Put,
            $"/{bucket}/short",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            new ByteArrayContent(Encoding.ASCII.GetBytes("5\r\nhello\r\n0\r\n\r\n")),
            headers: new Dictionary<string, string> { ["x-amz-decoded-content-length"] = "10" });
        using (var shortResponse = await _http.SendAsync(shortRequest))
        {
            await ErrorAsync(shortResponse, HttpStatusCode.BadRequest, "IncompleteBody");
        }

        await Assert.ThrowsAnyAsync<Amazon.S3.AmazonS3Exception>(() => H.S3.GetObjectMetadataAsync(bucket, "short"));
    }

    [Fact]
    public async Task UnsupportedSubresourcesAnswerNotImplemented()
    {
        var bucket = await NewBucketAsync("subres");
        var request = Signer.Sign(HttpMethod.Get, $"/{bucket}", RawSignerHash.Empty);
        request.RequestUri = new Uri(request.RequestUri + "?policy");
        using var response = await _http.SendAsync(request);

        // The query is part of what is signed; this one was not, so the signature fails first.
        await ErrorAsync(response, HttpStatusCode.Forbidden, "SignatureDoesNotMatch");

        var acl = await Assert.ThrowsAnyAsync<Amazon.S3.AmazonS3Exception>(() => H.S3.GetObjectAclAsync(new GetObjectAclRequest { BucketName = bucket, Key = "k" }));
        Assert.Equal(HttpStatusCode.NotImplemented, acl.StatusCode);
    }
}

internal static class RawSignerHash
{
    public const string Empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    public static string Of(byte[] body) => Convert.ToHexStringLower(SHA256.HashData(body));
}
