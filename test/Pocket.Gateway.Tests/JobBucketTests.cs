using System.Net;
using System.Text;
using Amazon.S3;
using Amazon.S3.Model;
using Pocket.Client;
using Pocket.Controller.Contracts;

namespace Pocket.Gateway.Tests;

/// <summary>
/// One world: a job registered through the controller (not through S3) is a bucket named by its job id; its own keys
/// (access key = job id, secret = token) reach it and nothing else; a bucket made through S3 is reachable by its job
/// id too. Real cluster, controller and gateway, driven by the AWS SDK and the native client.
/// </summary>
public sealed class JobBucketTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private GatewayHarness H => fixture.Harness;

    private PocketControllerClient Controller() =>
        new(H.Controller.Url, new PocketControllerClientOptions { ClusterToken = H.Cluster.Options.ClusterToken });

    private static async Task<string> GetTextAsync(AmazonS3Client s3, string bucket, string key)
    {
        using var response = await s3.GetObjectAsync(bucket, key);
        using var reader = new StreamReader(response.ResponseStream, Encoding.UTF8);
        return await reader.ReadToEndAsync();
    }

    private static async Task<List<string>> NativeKeysAsync(PocketJob job)
    {
        var keys = new List<string>();
        await foreach (var entry in job.ListAsync(string.Empty, delimited: false, pageSize: 100))
        {
            keys.Add(entry.Key);
        }

        return keys;
    }

    [Fact]
    public async Task AJobRegisteredThroughTheControllerIsABucketItsOwnKeysReach()
    {
        using var controller = Controller();
        var registration = await controller.RegisterJobAsync("native");
        await using var client = await PocketClient.ConnectAsync(registration.Metadata);
        var job = client.OpenJob(registration);
        await job.PutAsync("in/a.txt", Encoding.UTF8.GetBytes("put natively"));

        // The gateway has never heard of the job: a user sees it among the buckets, by its id.
        Assert.DoesNotContain(registration.JobId, H.Gateway.Buckets);
        Assert.Contains(registration.JobId, ((await H.S3.ListBucketsAsync()).Buckets ?? []).Select(b => b.BucketName));

        // The job's own keys: its id and its token.
        using var own = H.Client(registration.JobId, registration.Token.ToString());
        Assert.Equal([registration.JobId], ((await own.ListBucketsAsync()).Buckets ?? []).Select(b => b.BucketName).ToArray());
        var listed = await own.ListObjectsV2Async(new ListObjectsV2Request { BucketName = registration.JobId });
        Assert.Equal(["in/a.txt"], (listed.S3Objects ?? []).Select(o => o.Key).ToArray());
        Assert.Equal("put natively", await GetTextAsync(own, registration.JobId, "in/a.txt"));

        // And back: what S3 puts, the native client lists and reads (the gateway's records stay hidden).
        await own.PutObjectAsync(new PutObjectRequest { BucketName = registration.JobId, Key = "out/b.txt", ContentBody = "put through S3" });
        Assert.Equal(["in/a.txt", "out/b.txt"], await NativeKeysAsync(job));
        Assert.Equal("put through S3", Encoding.UTF8.GetString(await job.GetAsync("out/b.txt")));
        Assert.Equal(2, await job.CountAsync(string.Empty));

        // The gateway's users reach it too, as any bucket.
        Assert.Equal("put through S3", await GetTextAsync(H.S3, registration.JobId, "out/b.txt"));
        Assert.Contains(registration.JobId, H.Gateway.Buckets);

        // Deleting the bucket ends the job, as for a bucket made through S3.
        await job.DeleteAsync("in/", recursive: true);
        await job.DeleteAsync("out/", recursive: true);
        await H.S3.DeleteBucketAsync(registration.JobId);
        Assert.Null(await controller.GetJobAsync(registration.JobId));
    }

    [Fact]
    public async Task AJobsKeysNeverReachAnotherBucket()
    {
        using var controller = Controller();
        var a = await controller.RegisterJobAsync("keys-a");
        var b = await controller.RegisterJobAsync("keys-b");
        var made = GatewayHarness.NewBucketName("keys-s3");
        await H.S3.PutBucketAsync(new PutBucketRequest { BucketName = made });
        await H.S3.PutObjectAsync(new PutObjectRequest { BucketName = b.JobId, Key = "secret", ContentBody = "b's" });
        await H.S3.PutObjectAsync(new PutObjectRequest { BucketName = made, Key = "secret", ContentBody = "s3's" });
        var madeJob = H.Gateway.GetBucketCredentials(made)!.Value.AccessKey;

        using var keysOfA = H.Client(a.JobId, a.Token.ToString());
        await keysOfA.PutObjectAsync(new PutObjectRequest { BucketName = a.JobId, Key = "mine", ContentBody = "a's" });
        foreach (var other in new[] { b.JobId, made, madeJob, "no-such-job-77" })
        {
            await TestData.ExpectErrorAsync(() => keysOfA.GetObjectAsync(other, "secret"), "AccessDenied", HttpStatusCode.Forbidden);
            await TestData.ExpectErrorAsync(() => keysOfA.ListObjectsV2Async(new ListObjectsV2Request { BucketName = other }), "AccessDenied", HttpStatusCode.Forbidden);
            await TestData.ExpectErrorAsync(() => keysOfA.PutObjectAsync(new PutObjectRequest { BucketName = other, Key = "planted", ContentBody = "x" }), "AccessDenied", HttpStatusCode.Forbidden);
            await TestData.ExpectErrorAsync(() => keysOfA.DeleteObjectAsync(other, "secret"), "AccessDenied", HttpStatusCode.Forbidden);
        }

        await TestData.ExpectErrorAsync(() => keysOfA.DeleteBucketAsync(b.JobId), "AccessDenied", HttpStatusCode.Forbidden);
        await TestData.ExpectErrorAsync(() => keysOfA.PutBucketAsync(new PutBucketRequest { BucketName = GatewayHarness.NewBucketName("bya") }), "AccessDenied", HttpStatusCode.Forbidden);
        Assert.Equal([a.JobId], ((await keysOfA.ListBucketsAsync()).Buckets ?? []).Select(x => x.BucketName).ToArray());

        // Nothing of the others changed.
        Assert.Equal("b's", await GetTextAsync(H.S3, b.JobId, "secret"));
        Assert.Equal("s3's", await GetTextAsync(H.S3, made, "secret"));
        var listedB = await H.S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = b.JobId });
        Assert.Equal(["secret"], (listedB.S3Objects ?? []).Select(o => o.Key).ToArray());

        // A's id with another secret, and a made-up id, are refused as S3 refuses them.
        using var forged = H.Client(a.JobId, b.Token.ToString());
        await TestData.ExpectErrorAsync(() => forged.ListObjectsV2Async(new ListObjectsV2Request { BucketName = a.JobId }), "SignatureDoesNotMatch", HttpStatusCode.Forbidden);
        using var unknown = H.Client("nobody-1", a.Token.ToString());
        await TestData.ExpectErrorAsync(() => unknown.ListBucketsAsync(), "InvalidAccessKeyId", HttpStatusCode.Forbidden);
    }

    [Fact]
    public async Task ABucketMadeThroughS3AnswersToItsJobIdAndItsNameIsNotTakenTwice()
    {
        var name = GatewayHarness.NewBucketName("alias");
        await H.S3.PutBucketAsync(new PutBucketRequest { BucketName = name });
        await H.S3.PutObjectAsync(new PutObjectRequest { BucketName = name, Key = "k", ContentBody = "by name" });
        var (jobId, token) = H.Gateway.GetBucketCredentials(name)!.Value;

        // By its job id, the same bucket, for users and for the job's own keys.
        Assert.Equal("by name", await GetTextAsync(H.S3, jobId, "k"));
        using var own = H.Client(jobId, token);
        Assert.Equal("by name", await GetTextAsync(own, jobId, "k"));
        Assert.Equal("by name", await GetTextAsync(own, name, "k"));
        Assert.DoesNotContain(jobId, ((await H.S3.ListBucketsAsync()).Buckets ?? []).Select(b => b.BucketName));

        // Its job id is not a free bucket name, and neither is a job registered elsewhere.
        await TestData.ExpectErrorAsync(() => H.S3.PutBucketAsync(new PutBucketRequest { BucketName = jobId }), "BucketAlreadyExists", HttpStatusCode.Conflict);
        using var controller = Controller();
        var native = await controller.RegisterJobAsync("taken");
        await TestData.ExpectErrorAsync(() => H.S3.PutBucketAsync(new PutBucketRequest { BucketName = native.JobId }), "BucketAlreadyOwnedByYou", HttpStatusCode.Conflict);
        await controller.DeregisterAsync(native.JobId);
    }

    [Fact]
    public async Task AnEndedJobsBucketAndKeysAreGone()
    {
        using var controller = Controller();
        var job = await controller.RegisterJobAsync("ending");
        using var own = H.Client(job.JobId, job.Token.ToString());
        await own.PutObjectAsync(new PutObjectRequest { BucketName = job.JobId, Key = "k", ContentBody = "v" });

        await controller.DeregisterAsync(job.JobId);

        // The first request finds the job gone; from then on the gateway has forgotten the bucket and the key.
        await TestData.ExpectErrorAsync(() => H.S3.GetObjectAsync(job.JobId, "k"), "NoSuchBucket", HttpStatusCode.NotFound);
        Assert.DoesNotContain(job.JobId, H.Gateway.Buckets);
        await TestData.ExpectErrorAsync(() => own.ListBucketsAsync(), "InvalidAccessKeyId", HttpStatusCode.Forbidden);
        await TestData.ExpectErrorAsync(() => H.S3.GetObjectAsync(job.JobId, "k"), "NoSuchBucket", HttpStatusCode.NotFound);
    }
}
