using Pocket.Admin;
using Pocket.Client;
using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>A job's token opens its own namespace and nothing else.</summary>
public sealed class JobIsolationTests
{
    [Fact]
    public async Task SameKeysInTwoJobsHoldTheirOwnData()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var a = await cluster.Admin(client).RegisterJobAsync("alpha", cts.Token);
        var b = await cluster.Admin(client).RegisterJobAsync("beta", cts.Token);
        Assert.NotEqual(a.Token, b.Token);
        Assert.NotEqual(a.Id, b.Id);

        foreach (var (key, size) in new[] { ("shared/small", 500), ("shared/large", 3 << 20) })
        {
            await a.PutAsync(key, DataFor("a" + key, size), cancellationToken: cts.Token);
            await b.PutAsync(key, DataFor("b" + key, size), cancellationToken: cts.Token);
        }

        await a.PutAsync("only-a/x", new byte[10], cancellationToken: cts.Token);
        await b.PutAsync("only-b/y", new byte[20], cancellationToken: cts.Token);

        foreach (var (key, size) in new[] { ("shared/small", 500), ("shared/large", 3 << 20) })
        {
            Assert.Equal(Hash(DataFor("a" + key, size)), Hash(await a.GetAsync(key, cancellationToken: cts.Token)));
            Assert.Equal(Hash(DataFor("b" + key, size)), Hash(await b.GetAsync(key, cancellationToken: cts.Token)));
        }

        // Neither can see, read, list or delete the other's keys.
        Assert.Null(await a.LookupAsync("only-b/y", cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await a.GetAsync("only-b/y", cancellationToken: cts.Token));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await a.DeleteAsync("only-b/y", cancellationToken: cts.Token));
        Assert.Equal(0, await a.DeleteAsync("only-b/", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(0, await a.CountAsync("only-b/", cts.Token));
        Assert.Equal(["only-a/x", "shared/large", "shared/small"], await KeysAsync(a, cts.Token));
        Assert.Equal(["only-b/y", "shared/large", "shared/small"], await KeysAsync(b, cts.Token));

        // The token decides, not the job id a handle claims.
        var impostor = client.OpenJob(b.Id, a.Token);
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await impostor.GetAsync("only-b/y", cancellationToken: cts.Token));
        Assert.Equal(Hash(DataFor("ashared/small", 500)), Hash(await impostor.GetAsync("shared/small", cancellationToken: cts.Token)));

        // Deleting everything in one job leaves the other whole.
        Assert.Equal(3, await a.DeleteAsync("", recursive: true, cancellationToken: cts.Token));
        Assert.Equal(3, await b.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(Hash(DataFor("bshared/large", 3 << 20)), Hash(await b.GetAsync("shared/large", cancellationToken: cts.Token)));
        Assert.Equal(3, (await b.GetUsageAsync(cts.Token)).Objects);
        Assert.Equal(0, (await a.GetUsageAsync(cts.Token)).Objects);
    }

    [Fact]
    public async Task UnknownTokensAreUnauthorizedForEveryOperation()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var real = await cluster.Admin(client).RegisterJobAsync("real", cts.Token);
        await real.PutAsync("k", new byte[100], cancellationToken: cts.Token);
        await real.PutAsync("big", new byte[100_000], cancellationToken: cts.Token);

        foreach (var token in new[] { JobToken.NewRandom(), JobToken.None, cluster.Options.ClusterToken })
        {
            var ghost = client.OpenJob(real.Id, token);
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.GetAsync("k", cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.GetAsync("big", cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.PutAsync("new", new byte[10], cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.PutAsync("new", new byte[100_000], cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(() => ghost.PutAsync("new", new UnknownLengthStream(new MemoryStream(new byte[10])), cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.LookupAsync("k", cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.DeleteAsync("k", cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.DeleteAsync("", recursive: true, cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.CountAsync(cancellationToken: cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await KeysAsync(ghost, cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await ghost.GetUsageAsync(cts.Token));
        }

        Assert.Equal(2, await real.CountAsync(cancellationToken: cts.Token));
        Assert.Equal(new byte[100], await real.GetAsync("k", cancellationToken: cts.Token));
    }

    [Fact]
    public async Task JobAdministrationNeedsTheClusterToken()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var admin = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(admin).RegisterJobAsync("guarded", cts.Token);
        await job.PutAsync("k", new byte[] { 7 }, cancellationToken: cts.Token);

        // No cluster token, a wrong one, and a job's own token.
        foreach (var token in new[] { JobToken.None, JobToken.NewRandom(), job.Token })
        {
            await using var outsider = await PocketClient.ConnectAsync(cluster.MetadataAddress, cancellationToken: cts.Token);
            await Assert.ThrowsAsync<PocketUnauthorizedException>(() => outsider.Admin(token).RegisterJobAsync("sneaky", cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(() => outsider.Admin(token).DeregisterJobAsync(job.Id, cts.Token));
            await Assert.ThrowsAsync<PocketUnauthorizedException>(() => outsider.Admin(token).SetWeightsAsync(job.Id, new Dictionary<uint, double> { [1] = 1 }, cts.Token));
        }

        Assert.Equal(new byte[] { 7 }, await job.GetAsync("k", cancellationToken: cts.Token));
        var (objects, _) = await cluster.Admin(admin).DeregisterJobAsync(job.Id, cts.Token);
        Assert.Equal(1, objects);
    }

    [Fact]
    public async Task ListingNodesNeedsALiveJobsTokenOrTheClusterToken()
    {
        await using var cluster = await StartClusterAsync(nodes: 2);
        await using var admin = await cluster.ConnectAsync();
        using var cts = Timeout();
        var job = await cluster.Admin(admin).RegisterJobAsync("lister", cts.Token);
        Assert.Equal(2, (await cluster.Admin(admin).GetNodesAsync(cts.Token)).Count);

        // A client without the cluster token: only a live job's token lists nodes.
        await using var outsider = await PocketClient.ConnectAsync(cluster.MetadataAddress, cancellationToken: cts.Token);
        await Assert.ThrowsAsync<PocketUnauthorizedException>(() => outsider.Admin(JobToken.None).GetNodesAsync(cts.Token));
        foreach (var token in new[] { JobToken.NewRandom(), JobToken.None })
        {
            await using var stranger = await PocketClient.ConnectAsync(cluster.MetadataAddress, cancellationToken: cts.Token);
            var ex = await Assert.ThrowsAsync<PocketUnauthorizedException>(() => stranger.Admin(token).GetNodesAsync(cts.Token));
            Assert.Contains("job token or the cluster token", ex.Message, StringComparison.Ordinal);
            await Assert.ThrowsAsync<PocketUnauthorizedException>(() => stranger.OpenJob(job.Id, token).GetNodesAsync(cts.Token));
        }

        var handle = outsider.OpenJob(job.Id, job.Token);
        Assert.Equal(2, (await handle.GetNodesAsync(cts.Token)).Count);

        // The data path finds its nodes with the job's token alone.
        var data = DataFor("striped", 3 << 20);
        await handle.PutAsync("striped", data, cancellationToken: cts.Token);
        await using (var reader = await PocketClient.ConnectAsync(cluster.MetadataAddress, cancellationToken: cts.Token))
        {
            Assert.Equal(Hash(data), Hash(await reader.OpenJob(job.Id, job.Token).GetAsync("striped", cancellationToken: cts.Token)));
        }

        // An ended job's token lists nothing.
        await cluster.Admin(admin).DeregisterJobAsync(job.Id, cts.Token);
        await Assert.ThrowsAsync<PocketUnauthorizedException>(() => handle.GetNodesAsync(cts.Token));
    }

    [Fact]
    public async Task OneJobCannotFinishOrAbortAnothersWrite()
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout();
        var a = await cluster.Admin(client).RegisterJobAsync("writer", cts.Token);
        var b = await cluster.Admin(client).RegisterJobAsync("meddler", cts.Token);
        await using var connection = await FrameConnection.ConnectAsync("127.0.0.1", cluster.Metadata.EndPoint.Port, new FrameConnectionOptions(), cts.Token);

        async Task<FrameReply> SendAsync(Opcode opcode, JobToken token, BodyWriter body) =>
            await connection.SendAsync(opcode, FrameFlags.None, token, body.ToArray(), cancellationToken: cts.Token).AsTask().WaitAsync(cts.Token);

        var create = await SendAsync(Opcode.Create, a.Token, new BodyWriter().Str("doc").I64(100_000));
        Assert.Equal(Status.Ok, create.Status);
        var handle = new BodyReader(create.Body).U64();

        // Handles are small numbers; guessing one must not let another job touch the write.
        Assert.Equal(Status.NotFound, (await SendAsync(Opcode.Allocate, b.Token, new BodyWriter().U64(handle).I64(100_000))).Status);
        Assert.Equal(Status.NotFound, (await SendAsync(Opcode.Commit, b.Token, new BodyWriter().U64(handle).I64(0))).Status);
        Assert.Equal(Status.NotFound, (await SendAsync(Opcode.Abort, b.Token, new BodyWriter().U64(handle))).Status);
        Assert.Equal(0, await b.CountAsync(cancellationToken: cts.Token));

        // The owner still can.
        Assert.Equal(Status.Ok, (await SendAsync(Opcode.Commit, a.Token, new BodyWriter().U64(handle).I64(0))).Status);
        Assert.Equal(0, (await a.LookupAsync("doc", cts.Token))!.Size);
        Assert.Equal(0, await UsedAsync(cluster.Admin(client)));
    }

    private static async Task<List<string>> KeysAsync(PocketJob job, CancellationToken cancellationToken)
    {
        var keys = new List<string>();
        await foreach (var entry in job.ListAsync(cancellationToken: cancellationToken))
        {
            keys.Add(entry.Key);
        }

        return keys;
    }
}
