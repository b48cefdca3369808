using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The HTTP API of a real controller (Kestrel on port 0) in front of a real in-process cluster.</summary>
public sealed class ControllerApiTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task RegistrationReturnsTokenTierNodesAndLease()
    {
        await using var h = await ControllerHarness.StartAsync();

        var job = await h.RegisterAsync(new { name = "sort", functions = 4, capacity = "128MiB", latencySensitive = true });

        Assert.Equal("sort-1", job.JobId);
        Assert.False(job.Token.IsNone);
        Assert.Equal(NodeTier.Dram, job.Tier);
        Assert.Equal(300, job.LeaseSeconds);
        var leased = await h.RegisterAsync(new { name = "long", lease = "2h" });
        Assert.Equal(7200, leased.LeaseSeconds);
        Assert.Equal(TimeSpan.FromHours(2), h.Registry.Find(leased.JobId)!.Lease);
        Assert.Equal(90, (await h.RegisterAsync(new { name = "seconds", lease = 90 })).LeaseSeconds);
        Assert.Equal(h.Cluster.MetadataAddress, job.Metadata);
        Assert.Equal(2, job.Nodes.Count);
        Assert.Equal(1.0, job.Nodes.Sum(n => n.Weight), 9);
        Assert.All(job.Nodes, n => Assert.StartsWith("127.0.0.1:", n.Address, StringComparison.Ordinal));
        Assert.Equal(128 * MiB, job.CapacityBytes);
        Assert.Equal(2.4e9, job.ThroughputBitsPerSecond, 1.0);
        Assert.False(job.ThroughputBound);

        // The job works with what the controller returned, and nothing but POST ever shows the token.
        var handle = h.Open(job);
        await handle.PutAsync("hello", Encoding.UTF8.GetBytes("world"));
        Assert.Equal("world", Encoding.UTF8.GetString(await handle.GetAsync("hello")));
        await handle.PutAsync("blocks", new byte[1 << 20]);
        foreach (var path in new[] { "/v1/jobs", $"/v1/jobs/{job.JobId}", "/v1/cluster" })
        {
            var text = await h.Http.GetStringAsync(path);
            Assert.DoesNotContain(job.Token.ToString(), text, StringComparison.OrdinalIgnoreCase);
        }

        var one = await h.Http.GetFromJsonAsync<JobResponse>($"/v1/jobs/{job.JobId}", JsonSerializerOptions.Web);
        Assert.NotNull(one);
        Assert.Equal("sort", one.Name);
        Assert.Equal(4, one.Hints.Functions);
        Assert.Equal(128 * MiB, one.Hints.CapacityBytes);
        Assert.NotNull(one.Usage);
        Assert.Equal(2, one.Usage.Objects);
        Assert.True(one.Usage.Requests > 0);
        Assert.Equal(1 << 20, one.Usage.BytesByTier![NodeTier.Dram]);
        Assert.Equal(1 << 20, one.Usage.BytesByTier.Values.Sum());

        var all = await h.Http.GetFromJsonAsync<JobResponse[]>("/v1/jobs", JsonSerializerOptions.Web);
        Assert.Equal([job.JobId, leased.JobId, "seconds-1"], all!.Select(j => j.JobId));
    }

    [Fact]
    public async Task ThroughputAndCapacityAcceptNumbersAndUnits()
    {
        await using var h = await ControllerHarness.StartAsync();

        var byText = await h.RegisterAsync(new { name = "text", peakThroughput = "2Gbps" });
        var byNumber = await h.RegisterAsync(new { name = "number", peakThroughput = 2e9, capacity = 64 * MiB, latencySensitive = false });

        Assert.Equal(2e9, byText.ThroughputBitsPerSecond, 1.0);
        Assert.True(byText.ThroughputBound);
        Assert.Equal(64 * MiB, byText.CapacityBytes);
        Assert.Equal(2e9, byNumber.ThroughputBitsPerSecond, 1.0);
        Assert.Equal(64 * MiB, byNumber.CapacityBytes);
        Assert.Equal(NodeTier.Dram, byNumber.Tier);
    }

    [Fact]
    public async Task PlacementFollowsTheWeights()
    {
        // One node per job allowed, so fullest-first gives an uneven map: "filler" takes a quarter of node 1, and
        // "skewed" (256 MiB) gets the 192 MiB left there (0.75) and 64 MiB of node 2 (0.25).
        await using var h = await ControllerHarness.StartAsync(registry: new JobRegistryOptions { Sizing = ControllerHarness.Sizing(minimumNodes: 1) });
        var filler = await h.RegisterAsync(new { name = "filler", capacity = "64MiB" });
        var job = await h.RegisterAsync(new { name = "skewed", capacity = "256MiB" });

        Assert.Single(filler.Nodes);
        var weights = job.Nodes.ToDictionary(n => n.Id, n => n.Weight);
        Assert.Equal(2, weights.Count);
        Assert.Equal(0.75, weights[filler.Nodes[0].Id], 9);

        var handle = h.Open(job);
        const int objects = 200;
        var payload = new byte[MiB];
        for (var i = 0; i < objects; i++)
        {
            await handle.PutAsync($"obj/{i:D3}", payload);
        }

        var bytesPerNode = new Dictionary<uint, long>();
        for (var i = 0; i < objects; i++)
        {
            var info = await handle.LookupAsync($"obj/{i:D3}");
            Assert.NotNull(info);
            foreach (var block in info.Blocks)
            {
                bytesPerNode[block.NodeId] = bytesPerNode.GetValueOrDefault(block.NodeId) + block.Length;
            }
        }

        // Each object is one stripe unit, placed by weighted draw: 200 draws at p = 0.75 have a standard deviation
        // of ~3 %, so 12 % is four of them.
        var total = (double)bytesPerNode.Values.Sum();
        Assert.Equal(objects * MiB, total);
        Assert.Equal(weights.Keys.Order(), bytesPerNode.Keys.Order());
        foreach (var (node, weight) in weights)
        {
            Assert.InRange(bytesPerNode[node] / total, weight - 0.12, weight + 0.12);
        }
    }

    [Fact]
    public async Task DeleteFreesEveryByteOfTheJob()
    {
        await using var h = await ControllerHarness.StartAsync();
        var job = await h.RegisterAsync(new { name = "temp", capacity = "64MiB" });
        var other = await h.RegisterAsync(new { name = "other", capacity = "64MiB" });
        var handle = h.Open(job);
        for (var i = 0; i < 10; i++)
        {
            await handle.PutAsync($"chunk/{i}", new byte[2 * MiB]);
        }

        await h.Open(other).PutAsync("stays", new byte[MiB]);
        Assert.Equal(21 * MiB, await h.UsedBytesAsync());

        using var response = await h.Http.DeleteAsync($"/v1/jobs/{job.JobId}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var deleted = await response.Content.ReadFromJsonAsync<DeleteJobResponse>(JsonSerializerOptions.Web);

        Assert.Equal(10, deleted!.ObjectsFreed);
        Assert.Equal(20 * MiB, deleted.BytesFreed);
        Assert.Equal(MiB, await h.UsedBytesAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await h.Http.GetAsync($"/v1/jobs/{job.JobId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await h.Http.DeleteAsync($"/v1/jobs/{job.JobId}")).StatusCode);
        Assert.All(h.Registry.Allocations.Values, held => Assert.Equal(32.0 * MiB, held.Bytes, 1.0));
    }

    [Fact]
    public async Task AnExpiredLeaseIsReclaimedLikeADelete()
    {
        var time = new FakeTimeProvider();
        await using var h = await ControllerHarness.StartAsync(registry: new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), TimeProvider = time });
        var ended = new TaskCompletionSource<EndedJob>(TaskCreationOptions.RunContinuationsAsynchronously);
        h.Registry.JobEnded += e => ended.TrySetResult(e);
        var job = await h.RegisterAsync(new { name = "abandoned", capacity = "32MiB" });
        await h.Open(job).PutAsync("left/behind", new byte[4 * MiB]);
        await h.Registry.CheckLeasesAsync();
        Assert.Equal(4 * MiB, await h.UsedBytesAsync());

        time.Advance(TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(10));
        var result = await ended.Task.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(JobEndReason.LeaseExpired, result.Reason);
        Assert.Equal(0, await h.UsedBytesAsync());
        Assert.Empty(h.Registry.Allocations);
        using var response = await h.Http.GetAsync($"/v1/jobs/{job.JobId}");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<ErrorResponse>(JsonSerializerOptions.Web);
        Assert.Equal($"job '{job.JobId}' ended at {time.GetUtcNow():u}: lease expired", error!.Error);
    }

    [Fact]
    public async Task AnEndedJobSaysWhyUntilItIsForgotten()
    {
        await using var h = await ControllerHarness.StartAsync(registry: new JobRegistryOptions { Sizing = ControllerHarness.Sizing(), EndedJobsKept = 1 });
        var first = await h.RegisterAsync(new { name = "first", capacity = "32MiB" });
        var second = await h.RegisterAsync(new { name = "second", capacity = "32MiB" });
        Assert.Equal(HttpStatusCode.OK, (await h.Http.DeleteAsync($"/v1/jobs/{first.JobId}")).StatusCode);

        Assert.Contains($"job '{first.JobId}' ended at ", await ErrorOfAsync(h.Http.DeleteAsync($"/v1/jobs/{first.JobId}")));
        Assert.EndsWith(": deregistered", await ErrorOfAsync(h.Http.GetAsync($"/v1/jobs/{first.JobId}")));

        // Only the latest ending is kept: the first job is plainly unknown again, the second says what happened.
        Assert.Equal(HttpStatusCode.OK, (await h.Http.DeleteAsync($"/v1/jobs/{second.JobId}")).StatusCode);
        Assert.Equal($"no job '{first.JobId}'", await ErrorOfAsync(h.Http.GetAsync($"/v1/jobs/{first.JobId}")));
        Assert.Contains($"job '{second.JobId}' ended at ", await ErrorOfAsync(h.Http.GetAsync($"/v1/jobs/{second.JobId}/credentials")));
    }

    private static async Task<string> ErrorOfAsync(Task<HttpResponseMessage> request)
    {
        using var response = await request;
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<ErrorResponse>(JsonSerializerOptions.Web);
        return error!.Error;
    }

    [Fact]
    public async Task AWrongTokenIsDeniedAndJobsCannotSeeEachOther()
    {
        await using var h = await ControllerHarness.StartAsync();
        var alice = await h.RegisterAsync(new { name = "alice", capacity = "32MiB" });
        var bob = await h.RegisterAsync(new { name = "bob", capacity = "32MiB" });
        await h.Open(alice).PutAsync("secret", new byte[100 << 10]);
        await h.Open(alice).PutAsync("small-secret", new byte[100]);

        var forged = h.Client.OpenJob(alice.JobId, JobToken.NewRandom());
        var denied = await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await forged.GetAsync("secret"));
        Assert.DoesNotContain(alice.Token.ToString(), denied.Message, StringComparison.OrdinalIgnoreCase);
        await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await forged.PutAsync("planted", new byte[10]));

        // Bob's token with Alice's id still means Bob's namespace: her objects do not exist there.
        var crossed = h.Client.OpenJob(alice.JobId, bob.Token);
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await crossed.GetAsync("secret"));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await crossed.GetAsync("small-secret"));
        Assert.Equal(0, await crossed.CountAsync());
        Assert.Equal(2, await h.Open(alice).CountAsync());
    }

    [Theory]
    [InlineData("{}", "name")]
    [InlineData("{\"name\":\"\"}", "name")]
    [InlineData("{\"name\":42}", "name")]
    [InlineData("{\"name\":\"bad name!\"}", "name")]
    [InlineData("{\"name\":\"x\",\"functions\":-1}", "functions")]
    [InlineData("{\"name\":\"x\",\"functions\":\"ten\"}", "functions")]
    [InlineData("{\"name\":\"x\",\"functions\":2.5}", "functions")]
    [InlineData("{\"name\":\"x\",\"peakThroughput\":\"fast\"}", "peakThroughput")]
    [InlineData("{\"name\":\"x\",\"peakThroughput\":-5}", "peakThroughput")]
    [InlineData("{\"name\":\"x\",\"peakThroughput\":true}", "peakThroughput")]
    [InlineData("{\"name\":\"x\",\"capacity\":\"10 GiX\"}", "capacity")]
    [InlineData("{\"name\":\"x\",\"capacity\":1.5}", "capacity")]
    [InlineData("{\"name\":\"x\",\"capacity\":\"-1GiB\"}", "capacity")]
    [InlineData("{\"name\":\"x\",\"latencySensitive\":\"yes\"}", "latencySensitive")]
    [InlineData("{\"name\":\"x\",\"capcity\":\"1GiB\"}", "capcity")]
    [InlineData("{\"name\":\"x\",\"maxCapacity\":\"lots\"}", "maxCapacity")]
    [InlineData("{\"name\":\"x\",\"maxCapacity\":-1}", "maxCapacity")]
    [InlineData("{\"name\":\"x\",\"maxObjects\":-1}", "maxObjects")]
    [InlineData("{\"name\":\"x\",\"maxObjects\":\"many\"}", "maxObjects")]
    [InlineData("{\"name\":\"x\",\"maxKeyBytes\":1.5}", "maxKeyBytes")]
    [InlineData("{\"name\":\"x\",\"lease\":\"soon\"}", "lease")]
    [InlineData("{\"name\":\"x\",\"lease\":0}", "lease")]
    [InlineData("{\"name\":\"x\",\"lease\":\"30d\"}", "lease")]
    [InlineData("{\"name\":\"x\",\"lease\":\"1s\"}", "lease")]
    [InlineData("not json", "body")]
    [InlineData("", "body")]
    [InlineData("[1,2]", "body")]
    public async Task BadInputIsA400NamingTheField(string body, string field)
    {
        await using var h = await ControllerHarness.StartAsync();
        using var content = new StringContent(body, Encoding.UTF8, "application/json");

        using var response = await h.Http.PostAsync("/v1/jobs", content);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<ErrorResponse>(JsonSerializerOptions.Web);
        Assert.Equal(field, error!.Field);
        Assert.StartsWith(field + ": ", error.Error, StringComparison.Ordinal);
        Assert.Empty(h.Registry.Jobs);
    }

    [Fact]
    public async Task JobsTooLargeToSizeAreRefused()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var response = await h.Http.PostAsJsonAsync("/v1/jobs", new { name = "huge", capacity = "1TiB" });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<ErrorResponse>(JsonSerializerOptions.Web);
        Assert.Contains("4096 dram nodes", error!.Error, StringComparison.Ordinal);
        Assert.Equal(2, h.Cluster.Nodes.Count);
    }

    [Fact]
    public async Task NodesAreStartedThroughTheApiWhenShort()
    {
        await using var h = await ControllerHarness.StartAsync(nodes: 1);
        var job = await h.RegisterAsync(new { name = "grow", capacity = "768MiB" });

        Assert.Equal(3, job.Nodes.Count);
        Assert.Equal(3, h.Cluster.Nodes.Count);
        var cluster = await h.Http.GetFromJsonAsync<ClusterResponse>("/v1/cluster", JsonSerializerOptions.Web);
        Assert.Equal(3, cluster!.Nodes.Count);
        Assert.All(cluster.Nodes, n => Assert.Equal(1.0, n.Allocated.Share, 6));
    }

    [Fact]
    public async Task ClusterShowsNodesAndJobs()
    {
        await using var h = await ControllerHarness.StartAsync();
        var job = await h.RegisterAsync(new { name = "seen", capacity = "128MiB" });
        await h.Open(job).PutAsync("x", new byte[3 * MiB]);

        var cluster = await h.Http.GetFromJsonAsync<ClusterResponse>("/v1/cluster", JsonSerializerOptions.Web);

        Assert.Equal(h.Cluster.MetadataAddress, cluster!.Metadata);
        Assert.Equal(2, cluster.Nodes.Count);
        Assert.All(cluster.Nodes, n =>
        {
            Assert.Equal(NodeTier.Dram, n.Tier);
            Assert.Equal(NodeState.Live, n.State);
            Assert.Equal(ControllerHarness.NodeCapacity, n.Capacity.Total);
            Assert.Equal(0.25, n.Allocated.Share, 6);
            Assert.Equal(64 * MiB, n.Allocated.Bytes);
            Assert.NotNull(n.Network);
        });
        Assert.Equal(3 * MiB, cluster.Nodes.Sum(n => n.Capacity.Used));
        Assert.Equal([job.JobId], cluster.Jobs.Select(j => j.JobId));
    }

    [Fact]
    public async Task HealthAndOpenApiAreServed()
    {
        await using var h = await ControllerHarness.StartAsync();

        var health = await h.Http.GetFromJsonAsync<HealthResponse>("/healthz", JsonSerializerOptions.Web);
        Assert.Equal("ok", health!.Status);
        Assert.Equal(2, health.Nodes);

        using var openApi = JsonDocument.Parse(await h.Http.GetStringAsync("/openapi/v1.json"));
        var paths = openApi.RootElement.GetProperty("paths");
        foreach (var path in new[] { "/v1/jobs", "/v1/jobs/{id}", "/v1/cluster", "/healthz" })
        {
            Assert.True(paths.TryGetProperty(path, out _), $"OpenAPI document lacks {path}");
        }

        Assert.True(paths.GetProperty("/v1/jobs").TryGetProperty("post", out _));
        Assert.True(paths.GetProperty("/v1/jobs/{id}").TryGetProperty("delete", out _));
    }

    [Fact]
    public async Task UnknownJobsAre404()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var response = await h.Http.GetAsync("/v1/jobs/nope-1");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var error = await response.Content.ReadFromJsonAsync<ErrorResponse>(JsonSerializerOptions.Web);
        Assert.Equal("id", error!.Field);
        Assert.Equal("no job 'nope-1'", error.Error);
    }
}
