using System.Security.Cryptography;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;

namespace Pocket.Tests;

public sealed class SmokeTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1024)]
    [InlineData(65535)]
    [InlineData(65536)]
    [InlineData(65537)]
    [InlineData(5_000_000)]
    public async Task PutThenGetReturnsTheSameBytes(int size)
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 2, NodeCapacity = 64 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("smoke");
        var data = RandomNumberGenerator.GetBytes(size);
        await job.PutAsync("a/b", data);
        var back = await job.GetAsync("a/b");
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(back));
    }
}
