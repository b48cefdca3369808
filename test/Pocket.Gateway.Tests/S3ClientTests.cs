using System.Net;
using System.Text;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Amazon.S3.Transfer;

namespace Pocket.Gateway.Tests;

/// <summary>The gateway driven by the real AWS SDK for .NET, against a real in-process cluster and controller.</summary>
public sealed class S3ClientTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private GatewayHarness H => fixture.Harness;

    private AmazonS3Client S3 => H.S3;

    private async Task<string> NewBucketAsync(string stem)
    {
        var name = GatewayHarness.NewBucketName(stem);
        await S3.PutBucketAsync(new PutBucketRequest { BucketName = name });
        return name;
    }

    private async Task PutTextAsync(string bucket, string key, string text) =>
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = key, ContentBody = text });

    private async Task<string> GetTextAsync(string bucket, string key)
    {
        using var response = await S3.GetObjectAsync(bucket, key);
        using var reader = new StreamReader(response.ResponseStream, Encoding.UTF8);
        return await reader.ReadToEndAsync();
    }

    [Fact]
    public async Task BucketLifecycleCreateListHeadDelete()
    {
        var name = GatewayHarness.NewBucketName("life");
        await S3.PutBucketAsync(new PutBucketRequest { BucketName = name });

        var list = await S3.ListBucketsAsync();
        var listed = Assert.Single(list.Buckets!, b => b.BucketName == name);
        Assert.NotNull(listed.CreationDate);

        var head = await S3.HeadBucketAsync(new HeadBucketRequest { BucketName = name });
        Assert.Equal(HttpStatusCode.OK, head.HttpStatusCode);

        await TestData.ExpectErrorAsync(() => S3.PutBucketAsync(new PutBucketRequest { BucketName = name }), "BucketAlreadyOwnedByYou", HttpStatusCode.Conflict);
        using (var other = H.Client(GatewayHarness.OtherAccessKey, GatewayHarness.OtherSecretKey))
        {
            await TestData.ExpectErrorAsync(() => other.PutBucketAsync(new PutBucketRequest { BucketName = name }), "BucketAlreadyExists", HttpStatusCode.Conflict);
        }

        await S3.DeleteBucketAsync(name);
        Assert.DoesNotContain((await S3.ListBucketsAsync()).Buckets ?? [], b => b.BucketName == name);
        var missing = await Assert.ThrowsAnyAsync<AmazonS3Exception>(() => S3.HeadBucketAsync(new HeadBucketRequest { BucketName = name }));
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        await TestData.ExpectErrorAsync(() => S3.DeleteBucketAsync(name), "NoSuchBucket", HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task CreateBucketRegistersAJobWithTheHintsHeaderAndDeleteDeregistersIt()
    {
        var name = GatewayHarness.NewBucketName("hints");
        var request = new PutBucketRequest { BucketName = name };
        RequestEventHandler addHints = (_, e) =>
        {
            if (e is WebServiceRequestEventArgs web)
            {
                web.Headers["x-pocket-hints"] = "functions=4,capacity=64MiB,latency-sensitive=true";
            }
        };
        S3.BeforeRequestEvent += addHints;
        try
        {
            await S3.PutBucketAsync(request);
        }
        finally
        {
            S3.BeforeRequestEvent -= addHints;
        }

        var (jobId, _) = H.Gateway.GetBucketCredentials(name)!.Value;
        var job = await H.GetJobAsync(jobId);
        Assert.Equal(name, job.GetProperty("name").GetString());
        Assert.Equal(4, job.GetProperty("hints").GetProperty("functions").GetInt32());
        Assert.Equal(64L << 20, job.GetProperty("hints").GetProperty("capacityBytes").GetInt64());

        await S3.DeleteBucketAsync(name);
        using var gone = await H.ControllerHttp.GetAsync($"/v1/jobs/{jobId}");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task ABucketOverItsQuotaAnswersQuotaExceededAndKeepsItsObjects()
    {
        var name = GatewayHarness.NewBucketName("quota");
        RequestEventHandler addLimits = (_, e) =>
        {
            if (e is WebServiceRequestEventArgs web)
            {
                web.Headers["x-pocket-hints"] = "max-capacity=1MiB";
            }
        };
        S3.BeforeRequestEvent += addLimits;
        try
        {
            await S3.PutBucketAsync(new PutBucketRequest { BucketName = name });
        }
        finally
        {
            S3.BeforeRequestEvent -= addLimits;
        }

        await S3.PutObjectAsync(new PutObjectRequest { BucketName = name, Key = "a", ContentBody = "first" });
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = name, Key = "b", InputStream = new MemoryStream(TestData.Random(600_000, 7)) });
        var tooBig = await TestData.ExpectErrorAsync(
            () => S3.PutObjectAsync(new PutObjectRequest { BucketName = name, Key = "c", InputStream = new MemoryStream(TestData.Random(600_000, 8)) }),
            "QuotaExceeded",
            HttpStatusCode.Forbidden);
        Assert.Contains($"may hold {1 << 20} bytes", tooBig.Message, StringComparison.Ordinal);

        // Nothing half-done: the refused key does not exist and the bucket's objects are intact.
        var listed = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = name });
        Assert.Equal(["a", "b"], listed.S3Objects.Select(o => o.Key));
        Assert.Equal("first", await GetTextAsync(name, "a"));
    }

    [Fact]
    public async Task BadHintsAndBadBucketNamesAreRefused()
    {
        RequestEventHandler badHints = (_, e) =>
        {
            if (e is WebServiceRequestEventArgs web)
            {
                web.Headers["x-pocket-hints"] = "capacity=lots";
            }
        };
        S3.BeforeRequestEvent += badHints;
        try
        {
            var ex = await TestData.ExpectErrorAsync(() => S3.PutBucketAsync(new PutBucketRequest { BucketName = GatewayHarness.NewBucketName("badhints") }), "InvalidArgument", HttpStatusCode.BadRequest);
            Assert.Contains("capacity", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            S3.BeforeRequestEvent -= badHints;
        }

        await TestData.ExpectErrorAsync(() => S3.PutBucketAsync(new PutBucketRequest { BucketName = "bad_name" }), "InvalidBucketName", HttpStatusCode.BadRequest);
        await TestData.ExpectErrorAsync(() => S3.PutBucketAsync(new PutBucketRequest { BucketName = "Upper-Case" }), "InvalidBucketName", HttpStatusCode.BadRequest);
    }

    [Fact]
    public async Task PutGetHeadDeleteWithEtagTypeAndMetadata()
    {
        var bucket = await NewBucketAsync("objects");
        var data = TestData.Random(100_000, 1);
        var put = new PutObjectRequest { BucketName = bucket, Key = "dir/obj.bin", InputStream = new MemoryStream(data), ContentType = "application/x-test" };
        put.Metadata.Add("color", "blue");
        var putResponse = await S3.PutObjectAsync(put);
        Assert.Equal($"\"{TestData.Md5Hex(data)}\"", putResponse.ETag);

        var head = await S3.GetObjectMetadataAsync(bucket, "dir/obj.bin");
        Assert.Equal(data.Length, head.ContentLength);
        Assert.Equal("application/x-test", head.Headers.ContentType);
        Assert.Equal("blue", head.Metadata["color"]);
        Assert.Equal(putResponse.ETag, head.ETag);

        // The SDK sent the body aws-chunked; that is transfer framing, not the object's encoding.
        Assert.DoesNotContain("aws-chunked", head.Headers.ContentEncoding ?? string.Empty, StringComparison.Ordinal);

        using (var get = await S3.GetObjectAsync(bucket, "dir/obj.bin"))
        {
            Assert.Equal(putResponse.ETag, get.ETag);
            Assert.Equal(data, await TestData.ReadAllAsync(get.ResponseStream));
        }

        // A small object takes Pocket's inline path; an empty one is an object too.
        await PutTextAsync(bucket, "small.txt", "hello pocket");
        Assert.Equal("hello pocket", await GetTextAsync(bucket, "small.txt"));
        await PutTextAsync(bucket, "empty", string.Empty);
        Assert.Equal(string.Empty, await GetTextAsync(bucket, "empty"));
        Assert.Equal(0, (await S3.GetObjectMetadataAsync(bucket, "empty")).ContentLength);

        await S3.DeleteObjectAsync(bucket, "dir/obj.bin");
        await TestData.ExpectErrorAsync(() => S3.GetObjectAsync(bucket, "dir/obj.bin"), "NoSuchKey", HttpStatusCode.NotFound);
        var missingHead = await Assert.ThrowsAnyAsync<AmazonS3Exception>(() => S3.GetObjectMetadataAsync(bucket, "dir/obj.bin"));
        Assert.Equal(HttpStatusCode.NotFound, missingHead.StatusCode);

        // Deleting a missing key succeeds, as on S3.
        await S3.DeleteObjectAsync(bucket, "never-there");
    }

    [Fact]
    public async Task PutOverwritesAnExistingKey()
    {
        var bucket = await NewBucketAsync("overwrite");
        await PutTextAsync(bucket, "k", "first version");
        var big = TestData.Random(3 << 20, 2);
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "k", InputStream = new MemoryStream(big) });
        using (var get = await S3.GetObjectAsync(bucket, "k"))
        {
            Assert.Equal(big, await TestData.ReadAllAsync(get.ResponseStream));
        }

        await PutTextAsync(bucket, "k", "third");
        Assert.Equal("third", await GetTextAsync(bucket, "k"));
    }

    [Fact]
    public async Task MissingKeysAndBucketsAnswer404()
    {
        var bucket = await NewBucketAsync("missing");
        var ex = await TestData.ExpectErrorAsync(() => S3.GetObjectAsync(bucket, "nope/nothing"), "NoSuchKey", HttpStatusCode.NotFound);
        Assert.False(string.IsNullOrEmpty(ex.RequestId));
        await TestData.ExpectErrorAsync(() => S3.GetObjectAsync("no-such-bucket-here", "k"), "NoSuchBucket", HttpStatusCode.NotFound);
        await TestData.ExpectErrorAsync(() => PutTextAsync("no-such-bucket-here", "k", "x"), "NoSuchBucket", HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task RangeGetsReturnTheRequestedBytes()
    {
        var bucket = await NewBucketAsync("range");
        var data = TestData.Random((2 << 20) + 12345, 3);
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "r", InputStream = new MemoryStream(data) });

        async Task<byte[]> RangeAsync(long start, long end)
        {
            using var response = await S3.GetObjectAsync(new GetObjectRequest { BucketName = bucket, Key = "r", ByteRange = new ByteRange(start, end) });
            Assert.Equal(HttpStatusCode.PartialContent, response.HttpStatusCode);
            return await TestData.ReadAllAsync(response.ResponseStream);
        }

        Assert.Equal(data[100..200], await RangeAsync(100, 199));
        Assert.Equal(data[((1 << 20) - 10)..((1 << 20) + 10)], await RangeAsync((1 << 20) - 10, (1 << 20) + 9));
        Assert.Equal(data[^5..], await RangeAsync(data.Length - 5, data.Length + 1000));

        using (var suffix = await S3.GetObjectAsync(new GetObjectRequest { BucketName = bucket, Key = "r", ByteRange = new ByteRange("bytes=-7") }))
        {
            Assert.Equal(data[^7..], await TestData.ReadAllAsync(suffix.ResponseStream));
            Assert.Equal($"bytes {data.Length - 7}-{data.Length - 1}/{data.Length}", suffix.ContentRange);
        }

        using (var open = await S3.GetObjectAsync(new GetObjectRequest { BucketName = bucket, Key = "r", ByteRange = new ByteRange("bytes=2000000-") }))
        {
            Assert.Equal(data[2000000..], await TestData.ReadAllAsync(open.ResponseStream));
        }

        await TestData.ExpectErrorAsync(
            () => S3.GetObjectAsync(new GetObjectRequest { BucketName = bucket, Key = "r", ByteRange = new ByteRange(data.Length, data.Length + 10) }),
            "InvalidRange",
            HttpStatusCode.RequestedRangeNotSatisfiable);
    }

    [Fact]
    public async Task ListObjectsV2WithDelimiterPrefixAndPaging()
    {
        var bucket = await NewBucketAsync("list");
        string[] keys = ["a/1", "a/2", "a/sub/3", "b", "c/x/y/z", "d-e", "folder/", "folder/inside", "z"];
        foreach (var key in keys)
        {
            await PutTextAsync(bucket, key, key);
        }

        // A multipart upload in progress and the object records must stay hidden.
        await S3.InitiateMultipartUploadAsync(bucket, "pending");

        var root = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Delimiter = "/" });
        Assert.Equal(["b", "d-e", "z"], (root.S3Objects ?? []).Select(o => o.Key).ToArray());
        Assert.Equal(["a/", "c/", "folder/"], (root.CommonPrefixes ?? []).ToArray());
        Assert.All(root.S3Objects!, o => Assert.False(string.IsNullOrEmpty(o.ETag)));
        Assert.Equal(1, root.S3Objects!.Single(o => o.Key == "b").Size);

        var underA = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Prefix = "a/", Delimiter = "/" });
        Assert.Equal(["a/1", "a/2"], (underA.S3Objects ?? []).Select(o => o.Key).ToArray());
        Assert.Equal(["a/sub/"], (underA.CommonPrefixes ?? []).ToArray());

        var folder = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Prefix = "folder/", Delimiter = "/" });
        Assert.Equal(["folder/", "folder/inside"], (folder.S3Objects ?? []).Select(o => o.Key).Order(StringComparer.Ordinal).ToArray());

        // Paging through everything, two keys at a time.
        var seen = new List<string>();
        string? token = null;
        var pages = 0;
        do
        {
            var page = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, MaxKeys = 2, ContinuationToken = token });
            Assert.True((page.KeyCount ?? 0) <= 2);
            seen.AddRange((page.S3Objects ?? []).Select(o => o.Key));
            token = page.IsTruncated == true ? page.NextContinuationToken : null;
            pages++;
        }
        while (token is not null);
        Assert.Equal(keys.Order(StringComparer.Ordinal), seen.Order(StringComparer.Ordinal));
        Assert.True(pages >= 5);

        // Paging with a delimiter counts prefixes as entries.
        var entries = new List<string>();
        token = null;
        do
        {
            var page = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Delimiter = "/", MaxKeys = 1, ContinuationToken = token });
            entries.AddRange((page.S3Objects ?? []).Select(o => o.Key));
            entries.AddRange(page.CommonPrefixes ?? []);
            token = page.IsTruncated == true ? page.NextContinuationToken : null;
        }
        while (token is not null);
        Assert.Equal(["a/", "b", "c/", "d-e", "folder/", "z"], entries.ToArray());

        // A folder marker lists after the keys inside its folder (S3 lists it first; see docs/gateway.md).
        var after = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, StartAfter = "c/x/y/z" });
        Assert.Equal(["d-e", "folder/inside", "folder/", "z"], (after.S3Objects ?? []).Select(o => o.Key).ToArray());

        var partialPrefix = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Prefix = "a/s" });
        Assert.Equal(["a/sub/3"], (partialPrefix.S3Objects ?? []).Select(o => o.Key).ToArray());

        var otherDelimiter = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Delimiter = "-" });
        Assert.Equal(["d-"], (otherDelimiter.CommonPrefixes ?? []).ToArray());

        var v1 = await S3.ListObjectsAsync(new ListObjectsRequest { BucketName = bucket, Prefix = "a/" });
        Assert.Equal(["a/1", "a/2", "a/sub/3"], (v1.S3Objects ?? []).Select(o => o.Key).ToArray());
    }

    [Fact]
    public async Task ListObjectsResumesFromMarkersTokensAndStartAfterOverManyKeys()
    {
        var bucket = await NewBucketAsync("listpages");
        var keys = new List<string>();
        for (var i = 0; i < 40; i++)
        {
            keys.Add(i % 4 == 0 ? $"dir{i:D2}/x" : $"k{i:D2}");
        }

        keys.Add("dir00/y/z");
        await Task.WhenAll(keys.Select(key => PutTextAsync(bucket, key, key)));
        var sorted = keys.Order(StringComparer.Ordinal).ToList();

        // V1 with markers, 7 at a time.
        var seen = new List<string>();
        string? marker = null;
        do
        {
            var page = await S3.ListObjectsAsync(new ListObjectsRequest { BucketName = bucket, MaxKeys = 7, Marker = marker });
            seen.AddRange((page.S3Objects ?? []).Select(o => o.Key));
            marker = page.IsTruncated == true ? page.NextMarker : null;
        }
        while (marker is not null);
        Assert.Equal(sorted, seen);

        // V2 with a delimiter: start-after between keys, then continuation tokens from there.
        var entries = new List<string>();
        string? token = null;
        do
        {
            var page = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Delimiter = "/", MaxKeys = 3, StartAfter = "dir07", ContinuationToken = token });
            entries.AddRange((page.S3Objects ?? []).Select(o => o.Key));
            entries.AddRange(page.CommonPrefixes ?? []);
            token = page.IsTruncated == true ? page.NextContinuationToken : null;
        }
        while (token is not null);
        var expected = sorted.Where(k => string.CompareOrdinal(k, "dir07") > 0).Select(k => k.Contains('/') ? k[..(k.IndexOf('/') + 1)] : k).Distinct().Order(StringComparer.Ordinal);
        Assert.Equal(expected, entries.Order(StringComparer.Ordinal));
        Assert.Equal(["dir08/", "dir12/"], entries.Take(2));

        var afterAll = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, StartAfter = "zz" });
        Assert.Empty(afterAll.S3Objects ?? []);
    }

    [Fact]
    public async Task DeleteObjectsRemovesManyKeysAtOnce()
    {
        var bucket = await NewBucketAsync("multidelete");
        for (var i = 0; i < 5; i++)
        {
            await PutTextAsync(bucket, $"k{i}", "v");
        }

        var response = await S3.DeleteObjectsAsync(new DeleteObjectsRequest
        {
            BucketName = bucket,
            Objects = [new KeyVersion { Key = "k0" }, new KeyVersion { Key = "k2" }, new KeyVersion { Key = "k4" }, new KeyVersion { Key = "absent" }],
        });
        Assert.Equal(["absent", "k0", "k2", "k4"], (response.DeletedObjects ?? []).Select(d => d.Key).Order(StringComparer.Ordinal).ToArray());
        Assert.Empty(response.DeleteErrors ?? []);

        var left = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket });
        Assert.Equal(["k1", "k3"], (left.S3Objects ?? []).Select(o => o.Key).ToArray());

        var quiet = await S3.DeleteObjectsAsync(new DeleteObjectsRequest { BucketName = bucket, Quiet = true, Objects = [new KeyVersion { Key = "k1" }, new KeyVersion { Key = "k3" }] });
        Assert.Empty(quiet.DeletedObjects ?? []);
        await S3.DeleteBucketAsync(bucket);
    }

    [Fact]
    public async Task DeleteBucketRefusesABucketWithObjects()
    {
        var bucket = await NewBucketAsync("notempty");
        await PutTextAsync(bucket, "keep", "me");
        await TestData.ExpectErrorAsync(() => S3.DeleteBucketAsync(bucket), "BucketNotEmpty", HttpStatusCode.Conflict);
        await S3.DeleteObjectAsync(bucket, "keep");

        // Unfinished multipart uploads do not count: deregistering the job frees them.
        await S3.InitiateMultipartUploadAsync(bucket, "pending");
        await S3.DeleteBucketAsync(bucket);
    }

    [Fact]
    public async Task CopyObjectWithinAndAcrossBuckets()
    {
        var source = await NewBucketAsync("copysrc");
        var target = await NewBucketAsync("copydst");
        var data = TestData.Random((1 << 20) + 777, 4);
        var put = new PutObjectRequest { BucketName = source, Key = "orig", InputStream = new MemoryStream(data), ContentType = "image/png" };
        put.Metadata.Add("origin", "camera");
        await S3.PutObjectAsync(put);

        var copy = await S3.CopyObjectAsync(source, "orig", source, "copies/one");
        Assert.Equal($"\"{TestData.Md5Hex(data)}\"", copy.ETag);
        var copied = await S3.GetObjectMetadataAsync(source, "copies/one");
        Assert.Equal("image/png", copied.Headers.ContentType);
        Assert.Equal("camera", copied.Metadata["origin"]);

        var replace = new CopyObjectRequest
        {
            SourceBucket = source,
            SourceKey = "orig",
            DestinationBucket = target,
            DestinationKey = "moved",
            MetadataDirective = S3MetadataDirective.REPLACE,
            ContentType = "text/plain",
        };
        replace.Metadata.Add("origin", "copy");
        await S3.CopyObjectAsync(replace);
        using (var get = await S3.GetObjectAsync(target, "moved"))
        {
            Assert.Equal(data, await TestData.ReadAllAsync(get.ResponseStream));
            Assert.Equal("text/plain", get.Headers.ContentType);
            Assert.Equal("copy", get.Metadata["origin"]);
        }

        // Copying an object onto itself may only change its metadata.
        await TestData.ExpectErrorAsync(() => S3.CopyObjectAsync(source, "orig", source, "orig"), "InvalidRequest", HttpStatusCode.BadRequest);
        var self = new CopyObjectRequest { SourceBucket = source, SourceKey = "orig", DestinationBucket = source, DestinationKey = "orig", MetadataDirective = S3MetadataDirective.REPLACE };
        self.Metadata.Add("origin", "renamed");
        await S3.CopyObjectAsync(self);
        Assert.Equal("renamed", (await S3.GetObjectMetadataAsync(source, "orig")).Metadata["origin"]);

        await TestData.ExpectErrorAsync(() => S3.CopyObjectAsync(source, "absent", target, "x"), "NoSuchKey", HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task MultipartUploadOfThree5MiBPartsAssemblesTheObject()
    {
        var bucket = await NewBucketAsync("multipart");
        var parts = new[] { TestData.Random(5 << 20, 10), TestData.Random(5 << 20, 11), TestData.Random(5 << 20, 12) };
        var init = await S3.InitiateMultipartUploadAsync(new InitiateMultipartUploadRequest { BucketName = bucket, Key = "big/object", ContentType = "application/x-parts" });
        var etags = new List<PartETag>();
        for (var i = 0; i < parts.Length; i++)
        {
            var response = await S3.UploadPartAsync(new UploadPartRequest
            {
                BucketName = bucket,
                Key = "big/object",
                UploadId = init.UploadId,
                PartNumber = i + 1,
                InputStream = new MemoryStream(parts[i]),
            });
            Assert.Equal($"\"{TestData.Md5Hex(parts[i])}\"", response.ETag);
            etags.Add(new PartETag(i + 1, response.ETag));
        }

        var listed = await S3.ListPartsAsync(new ListPartsRequest { BucketName = bucket, Key = "big/object", UploadId = init.UploadId });
        Assert.Equal([1, 2, 3], (listed.Parts ?? []).Select(p => p.PartNumber ?? 0).ToArray());
        Assert.All(listed.Parts!, p => Assert.Equal(5L << 20, p.Size));

        var uploads = await S3.ListMultipartUploadsAsync(new ListMultipartUploadsRequest { BucketName = bucket });
        Assert.Contains(uploads.MultipartUploads ?? [], u => u.UploadId == init.UploadId && u.Key == "big/object");

        var complete = await S3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest { BucketName = bucket, Key = "big/object", UploadId = init.UploadId, PartETags = etags });
        var md5s = parts.SelectMany(p => System.Security.Cryptography.MD5.HashData(p)).ToArray();
        Assert.Equal($"\"{TestData.Md5Hex(md5s)}-3\"", complete.ETag);

        var whole = parts.SelectMany(p => p).ToArray();
        using (var get = await S3.GetObjectAsync(bucket, "big/object"))
        {
            Assert.Equal(whole.Length, get.ContentLength);
            Assert.Equal(complete.ETag, get.ETag);
            Assert.Equal("application/x-parts", get.Headers.ContentType);
            Assert.Equal(TestData.Sha256Hex(new MemoryStream(whole)), TestData.Sha256Hex(get.ResponseStream));
        }

        // One part at a time, as SDKs download large objects.
        using (var part2 = await S3.GetObjectAsync(new GetObjectRequest { BucketName = bucket, Key = "big/object", PartNumber = 2 }))
        {
            Assert.Equal(3, part2.PartsCount);
            Assert.Equal(parts[1], await TestData.ReadAllAsync(part2.ResponseStream));
        }

        // The parts are gone with the upload, and nothing hidden shows in listings.
        await TestData.ExpectErrorAsync(() => S3.ListPartsAsync(new ListPartsRequest { BucketName = bucket, Key = "big/object", UploadId = init.UploadId }), "NoSuchUpload", HttpStatusCode.NotFound);
        var all = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket });
        Assert.Equal(["big/object"], (all.S3Objects ?? []).Select(o => o.Key).ToArray());
    }

    [Fact]
    public async Task MultipartErrorsAbortBadPartAndSmallPart()
    {
        var bucket = await NewBucketAsync("mperrors");
        var small = TestData.Random(100, 20);
        var init = await S3.InitiateMultipartUploadAsync(bucket, "k");
        var p1 = await S3.UploadPartAsync(new UploadPartRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId, PartNumber = 1, InputStream = new MemoryStream(small) });
        var p2 = await S3.UploadPartAsync(new UploadPartRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId, PartNumber = 2, InputStream = new MemoryStream(small) });

        await TestData.ExpectErrorAsync(
            () => S3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId, PartETags = [new PartETag(1, "\"0123456789abcdef0123456789abcdef\"")] }),
            "InvalidPart",
            HttpStatusCode.BadRequest);
        await TestData.ExpectErrorAsync(
            () => S3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId, PartETags = [new PartETag(1, p1.ETag), new PartETag(2, p2.ETag)] }),
            "EntityTooSmall",
            HttpStatusCode.BadRequest);

        await S3.AbortMultipartUploadAsync(bucket, "k", init.UploadId);
        await TestData.ExpectErrorAsync(() => S3.ListPartsAsync(new ListPartsRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId }), "NoSuchUpload", HttpStatusCode.NotFound);
        await TestData.ExpectErrorAsync(
            () => S3.UploadPartAsync(new UploadPartRequest { BucketName = bucket, Key = "k", UploadId = init.UploadId, PartNumber = 3, InputStream = new MemoryStream(small) }),
            "NoSuchUpload",
            HttpStatusCode.NotFound);
        Assert.Empty((await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket })).S3Objects ?? []);

        // A single small part is a whole object.
        var one = await S3.InitiateMultipartUploadAsync(bucket, "single");
        var only = await S3.UploadPartAsync(new UploadPartRequest { BucketName = bucket, Key = "single", UploadId = one.UploadId, PartNumber = 1, InputStream = new MemoryStream(small) });
        await S3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest { BucketName = bucket, Key = "single", UploadId = one.UploadId, PartETags = [new PartETag(1, only.ETag)] });
        using var get = await S3.GetObjectAsync(bucket, "single");
        Assert.Equal(small, await TestData.ReadAllAsync(get.ResponseStream));
    }

    [Fact]
    public async Task A64MiBObjectThroughTransferUtilityAndAStreamedPutObject()
    {
        var bucket = await NewBucketAsync("large");
        const long size = 64L << 20;
        var expected = TestData.GeneratedStream.Sha256(size, 42);

        using (var transfer = new TransferUtility(S3))
        {
            await transfer.UploadAsync(new TransferUtilityUploadRequest { BucketName = bucket, Key = "via-transfer", InputStream = new TestData.GeneratedStream(size, 42), PartSize = 8L << 20 });
        }

        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "via-put", InputStream = new TestData.GeneratedStream(size, 42), AutoCloseStream = true });

        foreach (var key in new[] { "via-transfer", "via-put" })
        {
            using var get = await S3.GetObjectAsync(bucket, key);
            Assert.Equal(size, get.ContentLength);
            Assert.Equal(expected, TestData.Sha256Hex(get.ResponseStream));
        }

        await S3.DeleteObjectsAsync(new DeleteObjectsRequest { BucketName = bucket, Objects = [new KeyVersion { Key = "via-transfer" }, new KeyVersion { Key = "via-put" }] });
        await S3.DeleteBucketAsync(bucket);
    }

    [Fact]
    public async Task WrongSecretAndUnknownAccessKeyAreRefusedWith403()
    {
        var bucket = await NewBucketAsync("auth");
        await PutTextAsync(bucket, "secret", "data");
        using (var wrong = H.Client(GatewayHarness.AccessKey, "not-the-secret"))
        {
            await TestData.ExpectErrorAsync(() => wrong.GetObjectAsync(bucket, "secret"), "SignatureDoesNotMatch", HttpStatusCode.Forbidden);
            await TestData.ExpectErrorAsync(() => wrong.ListBucketsAsync(), "SignatureDoesNotMatch", HttpStatusCode.Forbidden);
            await TestData.ExpectErrorAsync(() => wrong.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "x", ContentBody = "y" }), "SignatureDoesNotMatch", HttpStatusCode.Forbidden);
        }

        using (var unknown = H.Client("AKIDNOBODY", "whatever"))
        {
            await TestData.ExpectErrorAsync(() => unknown.ListBucketsAsync(), "InvalidAccessKeyId", HttpStatusCode.Forbidden);
        }

        Assert.Equal("data", await GetTextAsync(bucket, "secret"));
        await TestData.ExpectErrorAsync(() => S3.GetObjectAsync(bucket, "x"), "NoSuchKey", HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task PresignedUrlsWorkUntilTheyExpire()
    {
        var bucket = await NewBucketAsync("presign");
        var data = TestData.Random(50_000, 5);
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "shared/file.bin", InputStream = new MemoryStream(data) });
        using var http = new HttpClient();

        var getUrl = await S3.GetPreSignedURLAsync(new GetPreSignedUrlRequest { BucketName = bucket, Key = "shared/file.bin", Verb = HttpVerb.GET, Expires = DateTime.UtcNow.AddMinutes(5), Protocol = Amazon.S3.Protocol.HTTP });
        Assert.Equal(data, await http.GetByteArrayAsync(getUrl));

        var putUrl = await S3.GetPreSignedURLAsync(new GetPreSignedUrlRequest { BucketName = bucket, Key = "uploaded by url", Verb = HttpVerb.PUT, Expires = DateTime.UtcNow.AddMinutes(5), Protocol = Amazon.S3.Protocol.HTTP });
        using (var put = await http.PutAsync(putUrl, new ByteArrayContent(Encoding.UTF8.GetBytes("via presigned put"))))
        {
            Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        }

        Assert.Equal("via presigned put", await GetTextAsync(bucket, "uploaded by url"));

        // Tampering with the URL breaks the signature.
        using var tampered = await http.GetAsync(getUrl.Replace("shared/file.bin", "shared/other.bin", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.Forbidden, tampered.StatusCode);
        Assert.Contains("<Code>SignatureDoesNotMatch</Code>", await tampered.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ABucketsOwnCredentialsReachThatBucketOnly()
    {
        var mine = await NewBucketAsync("jobcreds");
        var other = await NewBucketAsync("notmine");
        await PutTextAsync(mine, "k", "mine");
        await PutTextAsync(other, "k", "other");
        var (accessKey, secretKey) = H.Gateway.GetBucketCredentials(mine)!.Value;
        using var job = H.Client(accessKey, secretKey);

        Assert.Equal([mine], ((await job.ListBucketsAsync()).Buckets ?? []).Select(b => b.BucketName).ToArray());
        using (var get = await job.GetObjectAsync(mine, "k"))
        {
            Assert.Equal("mine", await new StreamReader(get.ResponseStream).ReadToEndAsync());
        }

        await job.PutObjectAsync(new PutObjectRequest { BucketName = mine, Key = "written", ContentBody = "by the job" });
        await TestData.ExpectErrorAsync(() => job.GetObjectAsync(other, "k"), "AccessDenied", HttpStatusCode.Forbidden);
        await TestData.ExpectErrorAsync(() => job.PutBucketAsync(new PutBucketRequest { BucketName = GatewayHarness.NewBucketName("byjob") }), "AccessDenied", HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task S3AndTheNativeClientSeeTheSameObjectsWithTheJobsOwnKeys()
    {
        var bucket = await NewBucketAsync("oneworld");
        await PutTextAsync(bucket, "in/a.txt", "from s3");
        await S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "in/big.bin", InputStream = new MemoryStream(TestData.Random(3 << 20, seed: 17)) });
        var (jobId, token) = H.Gateway.GetBucketCredentials(bucket)!.Value;
        await using var client = await Pocket.Client.PocketClient.ConnectAsync(H.Cluster.MetadataAddress);
        Assert.True(Pocket.Protocol.JobToken.TryParse(token, out var jobToken));
        var job = client.OpenJob(jobId, jobToken);

        // Natively, the bucket holds exactly what S3 put: the gateway's records (ETag, type) are not listed or counted.
        var listed = new List<string>();
        await foreach (var entry in job.ListAsync(string.Empty, delimited: false, pageSize: 100))
        {
            listed.Add(entry.Key);
        }

        Assert.Equal(["in/a.txt", "in/big.bin"], listed);
        Assert.Equal(2, await job.CountAsync(string.Empty));
        Assert.Equal("from s3", Encoding.UTF8.GetString(await job.GetAsync("in/a.txt")));
        Assert.Equal(3 << 20, (await job.GetAsync("in/big.bin")).Length);

        // And back: what the native client puts, S3 lists and reads.
        await job.PutAsync("native/b.txt", Encoding.UTF8.GetBytes("from pocket"));
        var keys = (await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket })).S3Objects.Select(o => o.Key).ToArray();
        Assert.Equal(["in/a.txt", "in/big.bin", "native/b.txt"], keys);
        Assert.Equal("from pocket", await GetTextAsync(bucket, "native/b.txt"));

        // The job's own keys (access key = job id, secret = token) reach the same objects over S3.
        using var own = H.Client(jobId, token);
        using var get = await own.GetObjectAsync(bucket, "native/b.txt");
        Assert.Equal("from pocket", await new StreamReader(get.ResponseStream).ReadToEndAsync());

        // A bucket whose only objects went away natively is empty to S3 too, and can be deleted.
        await job.DeleteAsync("in/", recursive: true);
        await job.DeleteAsync("native/b.txt");
        await S3.DeleteBucketAsync(bucket);
    }

    [Fact]
    public async Task KeysPocketCannotHoldGetAClearError()
    {
        var bucket = await NewBucketAsync("badkeys");
        var ex = await TestData.ExpectErrorAsync(() => PutTextAsync(bucket, "a//b", "x"), "InvalidArgument", HttpStatusCode.BadRequest);
        Assert.Contains("empty", ex.Message, StringComparison.Ordinal);
        await TestData.ExpectErrorAsync(() => PutTextAsync(bucket, "a/../b", "x"), "InvalidArgument", HttpStatusCode.BadRequest);
        await TestData.ExpectErrorAsync(() => PutTextAsync(bucket, new string('k', 1100), "x"), "KeyTooLongError", HttpStatusCode.BadRequest);

        // Keys S3 users write every day: spaces, unicode, '+', '=', '%', and folder markers.
        string[] fine = ["with space.txt", "ünïcödé/ключ/鍵", "plus+sign=equals&amp", "percent%20literal", "folder/", "x/y~z!*'()"];
        foreach (var key in fine)
        {
            await PutTextAsync(bucket, key, key);
            Assert.Equal(key, await GetTextAsync(bucket, key));
        }

        var listed = await S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket });
        Assert.Equal(fine.Order(StringComparer.Ordinal), (listed.S3Objects ?? []).Select(o => o.Key).Order(StringComparer.Ordinal));
    }
}
