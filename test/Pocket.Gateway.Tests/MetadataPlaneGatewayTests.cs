using Amazon.S3.Model;
using Pocket.Admin;
using Pocket.Client;

namespace Pocket.Gateway.Tests;

/// <summary>The gateway over two metadata servers: each bucket's objects go through the server its job lives on.</summary>
public sealed class MetadataPlaneGatewayTests
{
    [Fact]
    public async Task BucketsOnTwoMetadataServersTakePutsGetsAndListsThroughTheSdkAndSurviveAGatewayRestart()
    {
        await using var harness = await GatewayHarness.StartAsync(metadataServers: 2);
        var buckets = new[] { GatewayHarness.NewBucketName("plane-a"), GatewayHarness.NewBucketName("plane-b") };
        foreach (var bucket in buckets)
        {
            await harness.S3.PutBucketAsync(bucket);
        }

        // The controller put the two jobs on different servers, and each server knows only its own.
        var servers = new List<int>();
        foreach (var bucket in buckets)
        {
            var jobId = harness.Gateway.GetBucketCredentials(bucket)!.Value.AccessKey;
            var holders = new List<int>();
            for (var i = 0; i < 2; i++)
            {
                await using var client = await PocketClient.ConnectAsync(harness.Cluster.MetadataAddresses[i]);
                try
                {
                    await client.Admin(harness.Cluster.Options.ClusterToken).GetJobUsageAsync(jobId);
                    holders.Add(i);
                }
                catch (ObjectNotFoundException)
                {
                }
            }

            servers.Add(Assert.Single(holders));
        }

        Assert.Equal([0, 1], servers.Order());

        await PutGetAndListAsync("before");
        await harness.RestartGatewayAsync();
        await PutGetAndListAsync("after");

        async Task PutGetAndListAsync(string stem)
        {
            foreach (var bucket in buckets)
            {
                // A small object (inline on the metadata server) and a large one (blocks on the nodes, under grants of the job's server).
                var small = TestData.Random(1000, (stem + bucket).Length);
                var large = TestData.Random(3 << 20, (stem + bucket).Length + 1);
                await harness.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = $"{stem}/small", InputStream = new MemoryStream(small) });
                await harness.S3.PutObjectAsync(new PutObjectRequest { BucketName = bucket, Key = $"{stem}/large", InputStream = new MemoryStream(large) });
                Assert.Equal(small, await ReadAsync(bucket, $"{stem}/small"));
                Assert.Equal(large, await ReadAsync(bucket, $"{stem}/large"));
                var listed = await harness.S3.ListObjectsV2Async(new ListObjectsV2Request { BucketName = bucket, Prefix = stem + "/" });
                Assert.Equal([$"{stem}/large", $"{stem}/small"], listed.S3Objects.Select(o => o.Key));
            }
        }

        async Task<byte[]> ReadAsync(string bucket, string key)
        {
            using var response = await harness.S3.GetObjectAsync(bucket, key);
            using var memory = new MemoryStream();
            await response.ResponseStream.CopyToAsync(memory);
            return memory.ToArray();
        }
    }
}
