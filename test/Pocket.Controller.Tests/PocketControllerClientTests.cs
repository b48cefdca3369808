using System.Net;
using System.Text;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>The client library's side of the controller API: <see cref="PocketControllerClient"/> against a real controller.</summary>
public sealed class PocketControllerClientTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task RegisterListStatusAndDeregisterThroughTheClient()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var controller = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);

        var job = await controller.RegisterJobAsync("etl", new JobHints { Functions = 4, CapacityBytes = 64 * MiB, LatencySensitive = false });

        Assert.Equal("etl-1", job.JobId);
        Assert.False(job.Token.IsNone);
        Assert.Equal(NodeTier.Dram, job.Tier);
        Assert.Equal(h.Cluster.MetadataAddress, job.Metadata);
        Assert.Equal(1.0, job.Nodes.Sum(n => n.Weight), 9);
        Assert.Equal(64 * MiB, job.CapacityBytes);
        Assert.Equal(TimeSpan.FromMinutes(5), job.Lease);
        Assert.DoesNotContain(job.Token.ToString(), job.ToString(), StringComparison.Ordinal);

        // One address to know: the data path is found through the controller.
        await using (var client = await controller.ConnectClientAsync())
        {
            Assert.Equal(h.Cluster.MetadataAddress, client.MetadataAddress);
            var handle = client.OpenJob(job);
            await handle.PutAsync("k", Encoding.UTF8.GetBytes("v"));
            Assert.Equal("v", Encoding.UTF8.GetString(await handle.GetAsync("k")));
            await handle.PutAsync("blocks", new byte[256 << 10]);
        }

        var listed = Assert.Single(await controller.ListJobsAsync());
        Assert.Equal(job.JobId, listed.JobId);
        Assert.Equal("etl", listed.Name);
        Assert.Equal(4, listed.Hints.Functions);
        Assert.False(listed.Hints.LatencySensitive);
        Assert.Null(listed.Usage);

        var one = await controller.GetJobAsync(job.JobId);
        Assert.NotNull(one?.Usage?.BytesByTier);
        Assert.Equal(2, one.Usage.Objects);
        Assert.Equal(256 << 10, one.Usage.BytesByTier[NodeTier.Dram]);
        Assert.Null(await controller.GetJobAsync("nope-1"));

        var cluster = await controller.GetClusterAsync();
        Assert.Equal(h.Cluster.MetadataAddress, cluster.Metadata);
        Assert.Equal(2, cluster.Nodes.Count);
        Assert.All(cluster.Nodes, n =>
        {
            Assert.Equal(NodeTier.Dram, n.Tier);
            Assert.Equal(NodeState.Live, n.State);
            Assert.Equal(ControllerHarness.NodeCapacity, n.Capacity.Total);
        });
        Assert.True(cluster.Nodes.Sum(n => n.Allocated.Bytes) > 0);
        Assert.Equal(job.JobId, Assert.Single(cluster.Jobs).JobId);

        var health = await controller.GetHealthAsync();
        Assert.True(health.IsHealthy);
        Assert.Equal(2, health.Nodes);

        var ended = await controller.DeregisterAsync(job.JobId);
        Assert.Equal(2, ended.ObjectsFreed);
        Assert.Empty(await controller.ListJobsAsync());
    }

    [Fact]
    public async Task AJobsCredentialsAreFoundByIdOrByAUniqueName()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var controller = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);
        var photos = await controller.RegisterJobAsync("photos");
        var first = await controller.RegisterJobAsync("twice");
        var second = await controller.RegisterJobAsync("twice");

        // By id: the token the registration handed out, and where the job lives.
        var byId = await controller.GetJobCredentialsAsync(photos.JobId);
        Assert.NotNull(byId);
        Assert.Equal((photos.JobId, "photos", photos.Token, photos.Metadata), (byId.JobId, byId.Name, byId.Token, byId.Metadata));
        Assert.DoesNotContain(photos.Token.ToString(), byId.ToString(), StringComparison.Ordinal);

        // By a name only one job has; a name two jobs share names both ids instead of picking one.
        Assert.Equal(photos.JobId, (await controller.GetJobCredentialsAsync("photos"))!.JobId);
        var ambiguous = await Assert.ThrowsAsync<PocketControllerException>(() => controller.GetJobCredentialsAsync("twice"));
        Assert.Equal(System.Net.HttpStatusCode.Conflict, ambiguous.HttpStatus);
        Assert.Contains(first.JobId, ambiguous.Message, StringComparison.Ordinal);
        Assert.Contains(second.JobId, ambiguous.Message, StringComparison.Ordinal);
        Assert.Equal(second.Token, (await controller.GetJobCredentialsAsync(second.JobId))!.Token);

        // Unknown, and ended, jobs are null.
        Assert.Null(await controller.GetJobCredentialsAsync("nobody"));
        await controller.DeregisterAsync(photos.JobId);
        Assert.Null(await controller.GetJobCredentialsAsync(photos.JobId));
        Assert.Null(await controller.GetJobCredentialsAsync("photos"));
    }

    [Fact]
    public async Task ControllerErrorsBecomePocketExceptionsWithTheControllersMessage()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var controller = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);

        var badName = await Assert.ThrowsAsync<PocketControllerException>(() => controller.RegisterJobAsync("no spaces"));
        Assert.Equal(HttpStatusCode.BadRequest, badName.HttpStatus);
        Assert.Equal(Status.BadRequest, badName.Status);
        Assert.Equal("name", badName.Field);
        Assert.StartsWith("name:", badName.Message, StringComparison.Ordinal);

        var badHint = await Assert.ThrowsAsync<PocketControllerException>(() => controller.RegisterJobAsync("x", new JobHints { Functions = -1 }));
        Assert.Equal("functions", badHint.Field);

        var missing = await Assert.ThrowsAsync<PocketControllerException>(() => controller.DeregisterAsync("nope-1"));
        Assert.Equal(HttpStatusCode.NotFound, missing.HttpStatus);
        Assert.Equal(Status.NotFound, missing.Status);
        Assert.Contains("nope-1", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnUnreachableControllerIsAPocketExceptionNamingIt()
    {
        // A port that was free a moment ago: nothing listens there.
        var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var controller = new PocketControllerClient(new Uri($"http://127.0.0.1:{port}"));

        var ex = await Assert.ThrowsAsync<PocketControllerException>(() => controller.ListJobsAsync());

        Assert.Null(ex.HttpStatus);
        Assert.Contains($"127.0.0.1:{port}", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ABaseAddressWithAPathKeepsIt()
    {
        using var controller = new PocketControllerClient(new Uri("http://example.test/pocket"));
        Assert.Equal("http://example.test/pocket/", controller.BaseAddress.ToString());
        Assert.Throws<ArgumentException>(() => new PocketControllerClient(new Uri("ftp://example.test/")));
    }
}
