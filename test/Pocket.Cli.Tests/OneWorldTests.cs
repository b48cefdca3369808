using System.Net;
using System.Text;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace Pocket.Cli.Tests;

/// <summary>
/// Jobs and buckets are one world, through the real `pocket up` (controller, metadata server, storage node and S3
/// gateway as processes), the CLI's verbs and the AWS SDK: `pocket s3 credentials JOB` gives keys the gateway takes
/// for that job's bucket only; what the CLI puts, S3 reads and back; `pocket ls` lists a bucket made through S3.
/// </summary>
public sealed class OneWorldTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    private static AmazonS3Client S3(System.Text.Json.Nodes.JsonNode credentials) => new(
        new BasicAWSCredentials(credentials["accessKey"]!.GetValue<string>(), credentials["secretKey"]!.GetValue<string>()),
        new AmazonS3Config { ServiceURL = credentials["endpoint"]!.GetValue<string>(), ForcePathStyle = true, AuthenticationRegion = "us-east-1", MaxErrorRetry = 1, Timeout = TimeSpan.FromSeconds(60) });

    private static async Task<string> GetTextAsync(AmazonS3Client s3, string bucket, string key)
    {
        using var response = await s3.GetObjectAsync(bucket, key);
        using var reader = new StreamReader(response.ResponseStream, Encoding.UTF8);
        return await reader.ReadToEndAsync();
    }

    [Fact]
    public async Task ARegisteredJobIsABucketAndABucketIsAJob()
    {
        await using var up = UpProcess.Start(_home.Path, "--port", "0", "--controller-port", "0", "--gateway-port", "0", "--no-metrics", "--nodes", "1", "--capacity", "64MiB", "--for", "10m");
        await up.WaitForLineAsync(line => line.StartsWith("stopping by itself", StringComparison.Ordinal));

        // A job registered with the CLI; an object put natively.
        var jobId = (await PocketProcess.RunOkAsync(_home.Path, "job", "register", "world", "--json")).Json()["id"]!.GetValue<string>();
        var file = _home.File("native.txt");
        await File.WriteAllTextAsync(file, "put by pocket");
        await PocketProcess.RunOkAsync(_home.Path, "put", file, $"{jobId}/native.txt");

        // Its keys reach its bucket (named by the job id) through the gateway: list, read, write.
        var keys = (await PocketProcess.RunOkAsync(_home.Path, "s3", "credentials", jobId, "--json")).Json();
        Assert.Equal(jobId, keys["accessKey"]!.GetValue<string>());
        Assert.Equal(jobId, keys["bucket"]!.GetValue<string>());
        using var own = S3(keys);
        var listed = await own.ListObjectsV2Async(new ListObjectsV2Request { BucketName = jobId });
        Assert.Equal(["native.txt"], (listed.S3Objects ?? []).Select(o => o.Key).ToArray());
        Assert.Equal("put by pocket", await GetTextAsync(own, jobId, "native.txt"));
        await own.PutObjectAsync(new PutObjectRequest { BucketName = jobId, Key = "from/s3.txt", ContentBody = "put by S3" });
        var copy = _home.File("from-s3.txt");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{jobId}/from/s3.txt", copy);
        Assert.Equal("put by S3", await File.ReadAllTextAsync(copy));
        var ls = await PocketProcess.RunOkAsync(_home.Path, "ls", jobId, "--recursive", "--json");
        Assert.Contains("from/s3.txt", ls.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("\uffff", ls.Stdout, StringComparison.Ordinal);

        // A bucket made through S3 (the gateway's user) is a job the CLI lists and reads by the bucket's name.
        using var user = S3((await PocketProcess.RunOkAsync(_home.Path, "s3", "credentials", "--json")).Json());
        var bucket = "made-by-s3-" + Guid.NewGuid().ToString("N")[..8];
        await user.PutBucketAsync(new PutBucketRequest { BucketName = bucket });
        await user.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "photo.jpg", ContentBody = "pixels" });
        var bucketLs = await PocketProcess.RunOkAsync(_home.Path, "ls", bucket, "--json");
        Assert.Contains("photo.jpg", bucketLs.Stdout, StringComparison.Ordinal);
        var photo = _home.File("photo.jpg");
        await PocketProcess.RunOkAsync(_home.Path, "get", $"{bucket}/photo.jpg", photo);
        Assert.Equal("pixels", await File.ReadAllTextAsync(photo));

        // Its own keys, from the CLI, reach it and only it; the first job's keys do not reach it.
        var bucketKeys = (await PocketProcess.RunOkAsync(_home.Path, "s3", "credentials", bucket, "--json")).Json();
        using var bucketOwn = S3(bucketKeys);
        Assert.Equal("pixels", await GetTextAsync(bucketOwn, bucket, "photo.jpg"));
        var denied = await Assert.ThrowsAnyAsync<AmazonS3Exception>(() => bucketOwn.GetObjectAsync(jobId, "native.txt"));
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        denied = await Assert.ThrowsAnyAsync<AmazonS3Exception>(() => own.GetObjectAsync(bucket, "photo.jpg"));
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal("AccessDenied", denied.ErrorCode);

        // A job nobody has: one line, exit 1.
        var unknown = await PocketProcess.RunAsync(_home.Path, "s3", "credentials", "no-such-job-1");
        Assert.True(unknown.ExitCode == 1, unknown.ToString());
        Assert.Contains("unknown job 'no-such-job-1'", unknown.Stderr, StringComparison.Ordinal);
    }
}
