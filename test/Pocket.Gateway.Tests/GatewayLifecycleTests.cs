using System.Net;
using System.Text;
using Amazon.S3.Model;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Protocol;

namespace Pocket.Gateway.Tests;

/// <summary>What outlives a gateway and what it notices: restarts with a state directory, jobs ended behind its back.</summary>
public sealed class GatewayLifecycleTests : IAsyncLifetime
{
    private GatewayHarness _harness = null!;

    public async Task InitializeAsync() => _harness = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    [Fact]
    public async Task ARestartedGatewayFindsItsBucketsInTheStateDirectory()
    {
        var bucket = GatewayHarness.NewBucketName("persist");
        await _harness.S3.PutBucketAsync(new PutBucketRequest { BucketName = bucket });
        await _harness.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "kept", ContentBody = "still here" });
        Assert.True(File.Exists(Path.Combine(_harness.StateDirectory, "buckets.json")));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_harness.StateDirectory, "buckets.json")));
        }

        await _harness.RestartGatewayAsync();

        Assert.Contains(bucket, _harness.Gateway.Buckets);
        using var get = await _harness.S3.GetObjectAsync(bucket, "kept");
        Assert.Equal("still here", await new StreamReader(get.ResponseStream, Encoding.UTF8).ReadToEndAsync());
    }

    [Fact]
    public async Task ABucketWhoseJobEndedElsewhereIsNoSuchBucket()
    {
        var bucket = GatewayHarness.NewBucketName("ended");
        await _harness.S3.PutBucketAsync(new PutBucketRequest { BucketName = bucket });
        await _harness.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "k", ContentBody = "v" });
        var (jobId, _) = _harness.Gateway.GetBucketCredentials(bucket)!.Value;

        // Deregistered through the controller, as a lease expiry or an operator would.
        using (var deleted = await _harness.ControllerHttp.DeleteAsync($"/v1/jobs/{jobId}"))
        {
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        await TestData.ExpectErrorAsync(() => _harness.S3.GetObjectAsync(bucket, "k"), "NoSuchBucket", HttpStatusCode.NotFound);
        Assert.DoesNotContain(bucket, _harness.Gateway.Buckets);

        // The name is free again.
        await _harness.S3.PutBucketAsync(new PutBucketRequest { BucketName = bucket });
        await _harness.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = "k", ContentBody = "new" });
    }

    [Fact]
    public async Task AGatewayWithoutTheClusterTokenIsRefusedByTheController()
    {
        var state = Path.Combine(_harness.StateDirectory, "anonymous");
        foreach (var token in new[] { JobToken.None, JobToken.NewRandom() })
        {
            var gateway = new GatewayServer(GatewayHarness.Options(_harness.Controller.Url, state, token), NullLoggerFactory.Instance);
            await using (gateway)
            {
                var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => gateway.StartAsync());
                Assert.Contains("401", ex.Message, StringComparison.Ordinal);
                Assert.Contains("cluster token", ex.Message, StringComparison.Ordinal);
            }
        }

        // The controller's own API refuses the harness's client without its header, too.
        using var anonymous = new HttpClient { BaseAddress = _harness.Controller.Url };
        using var refused = await anonymous.GetAsync("/v1/cluster");
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
    }

    [Fact]
    public async Task RestartDropsBucketsWhoseJobsEndedWhileItWasDown()
    {
        var kept = GatewayHarness.NewBucketName("kept");
        var ended = GatewayHarness.NewBucketName("gone");
        await _harness.S3.PutBucketAsync(new PutBucketRequest { BucketName = kept });
        await _harness.S3.PutBucketAsync(new PutBucketRequest { BucketName = ended });
        var (jobId, _) = _harness.Gateway.GetBucketCredentials(ended)!.Value;
        using (var deleted = await _harness.ControllerHttp.DeleteAsync($"/v1/jobs/{jobId}"))
        {
            Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        }

        await _harness.RestartGatewayAsync();
        Assert.Contains(kept, _harness.Gateway.Buckets);
        Assert.DoesNotContain(ended, _harness.Gateway.Buckets);
        Assert.DoesNotContain(ended, await File.ReadAllTextAsync(Path.Combine(_harness.StateDirectory, "buckets.json")), StringComparison.Ordinal);
    }
}
