using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// The controller scales the metadata plane on its band: real `pocket metadata` and `pocket storage` children started
/// through the provisioner as `pocket up` starts them, the controller on a fake clock. Load above the band starts a
/// server at the spare address, which the nodes join and new jobs go to; below the band it drains: new jobs avoid it,
/// it is stopped after its last job ends and its shares return to the first server; no job is lost either way.
/// </summary>
public sealed class MetadataScalingTests
{
    private const long NodeCapacity = 64L << 20;

    [Fact]
    public async Task LoadAboveTheBandAddsAMetadataServerAndBelowItTheServerDrainsAndStopsAfterItsLastJob()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var token = JobToken.NewRandom();
        var spare = FreeLoopbackAddress();
        await using var provisioner = new LocalProcessProvisioner(
            new LocalProcessProvisionerOptions
            {
                Executable = PocketProcess.Program.File,
                BaseArguments = PocketProcess.Program.Prefix,
                ClusterToken = token,
                StartTimeout = TimeSpan.FromSeconds(90),
                Metadata = new LocalMetadataOptions { StartTimeout = TimeSpan.FromSeconds(90) },
                SpareMetadataAddresses = [spare],
            },
            NullLoggerFactory.Instance);
        var first = await provisioner.StartMetadataAsync(new MetadataServerRequest(0, 0, 2), cts.Token);
        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, NodeCapacity), cts.Token);
        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, NodeCapacity), cts.Token);
        await using var controller = new ControllerServer(
            new ControllerOptions
            {
                MetadataAddress = first.Address,
                ClusterToken = token,
                Registry = new JobRegistryOptions
                {
                    TimeProvider = time,
                    NodeStartTimeout = TimeSpan.FromSeconds(90),
                    Sizing = new SizingOptions { NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = NodeCapacity }] },
                },

                // The job request rate decides here (the test makes it: a loop of requests, then none); the CPU band is
                // out of reach both ways so a loaded test machine cannot decide for it.
                MetadataScaling = new MetadataScalingOptions
                {
                    SpareAddresses = [spare],
                    RequestsLow = 50,
                    RequestsHigh = 200,
                    CpuLow = 15,
                    CpuHigh = 16,
                    UpAfter = TimeSpan.FromSeconds(2),
                    Cooldown = TimeSpan.FromSeconds(10),
                },
            },
            provisioner,
            NullLoggerFactory.Instance);
        await controller.StartAsync(cts.Token);
        var whole = await WaitForNodesAsync(first.Address, token, null, cts.Token);

        var busy = await controller.Registry.RegisterAsync("busy", new JobHints(), cts.Token);
        Assert.Equal(first.Address, busy.MetadataAddress);
        await using var busyClient = await PocketClient.ConnectAsync(busy.MetadataAddress!, cancellationToken: cts.Token);
        var busyJob = busyClient.OpenJob(busy.Id, busy.Token);
        var large = RandomBytes(3 << 20);
        await busyJob.PutAsync("large", large, cancellationToken: cts.Token);
        await busyJob.PutAsync("small", RandomBytes(100), cancellationToken: cts.Token);

        // Thousands of requests a second against a band of 200: the plane scales up, and the new server takes jobs once
        // both nodes have joined it (they knew its address from their start).
        using (var stopLoad = CancellationTokenSource.CreateLinkedTokenSource(cts.Token))
        {
            var load = Task.Run(
                async () =>
                {
                    while (!stopLoad.IsCancellationRequested)
                    {
                        await busyJob.LookupAsync("small", stopLoad.Token);
                    }
                },
                CancellationToken.None);
            await AdvanceUntilAsync(time, controller, e => e.Kind == "metadata-serving", cts.Token);
            await stopLoad.CancelAsync();
            await load.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }

        var events = controller.Events.Last(100);
        var up = Assert.Single(events, e => e.Kind == "metadata-scale-up");
        Assert.Contains("req/s", up.Reason, StringComparison.Ordinal);
        Assert.Contains(spare, up.Reason, StringComparison.Ordinal);
        Assert.Equal(2, provisioner.MetadataServers.Count);

        // A new job goes to the new server (the least loaded), and its data goes through its share of the nodes.
        var fresh = await controller.Registry.RegisterAsync("fresh", new JobHints(), cts.Token);
        Assert.Equal(spare, fresh.MetadataAddress);
        await using var freshClient = await PocketClient.ConnectAsync(fresh.MetadataAddress!, cancellationToken: cts.Token);
        var freshJob = freshClient.OpenJob(fresh.Id, fresh.Token);
        await freshJob.PutAsync("large", large, cancellationToken: cts.Token);
        Assert.Equal(large, await freshJob.GetAsync("large", cancellationToken: cts.Token));

        using (var api = new PocketControllerClient(controller.Url, token))
        {
            var cluster = await api.GetClusterAsync(cts.Token);
            Assert.Equal([first.Address, spare], cluster.MetadataServers!.Select(s => s.Address));
            Assert.All(cluster.MetadataServers!, s => Assert.Equal("serving", s.State));
            var busiest = cluster.MetadataServers![0];
            Assert.True(busiest.Cpu is >= 0, "the first server reports its CPU");
        }

        // No more load: after the cooldown below the band, the server the controller started drains. New jobs avoid it.
        await AdvanceUntilAsync(time, controller, e => e.Kind == "metadata-draining", cts.Token);
        var draining = Assert.Single(controller.Events.Last(100), e => e.Kind == "metadata-draining");
        Assert.Contains(spare, draining.Reason, StringComparison.Ordinal);
        var later = await controller.Registry.RegisterAsync("later", new JobHints(), cts.Token);
        Assert.Equal(first.Address, later.MetadataAddress);

        // It still holds a job: it keeps running, and the job keeps working.
        for (var i = 0; i < 5; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(100, cts.Token);
        }

        Assert.DoesNotContain(controller.Events.Last(100), e => e.Kind == "metadata-stopped");
        Assert.Equal(2, provisioner.MetadataServers.Count);
        Assert.Equal(large, await freshJob.GetAsync("large", cancellationToken: cts.Token));

        // Its last job ends: it is stopped, and the nodes give its segments back to the first server.
        await controller.Registry.DeregisterAsync(fresh.Id, cts.Token);
        await AdvanceUntilAsync(time, controller, e => e.Kind == "metadata-stopped", cts.Token);
        await controller.MetadataScaling;
        Assert.Contains(spare, Assert.Single(controller.Events.Last(100), e => e.Kind == "metadata-stopped").Reason, StringComparison.Ordinal);
        Assert.True(provisioner.MetadataServers.Count == 1, string.Join("\n", controller.Events.Last(100).Select(e => $"{e.Kind}: {e.Reason}")) + "\n" + string.Join(", ", provisioner.MetadataServers));
        Assert.Equal(first.Address, Assert.Single(provisioner.MetadataServers).Address);
        Assert.Equal(whole, await WaitForNodesAsync(first.Address, token, whole, cts.Token));

        // No job was lost in either direction: the first server's jobs have every byte and keep writing.
        Assert.DoesNotContain(controller.Events.Last(100), e => e.Kind is "metadata-lost" or "metadata-scale-failed");
        Assert.NotNull(controller.Registry.Find(busy.Id));
        Assert.NotNull(controller.Registry.Find(later.Id));
        Assert.Equal(large, await busyJob.GetAsync("large", cancellationToken: cts.Token));
        await using var laterClient = await PocketClient.ConnectAsync(later.MetadataAddress!, cancellationToken: cts.Token);
        var laterJob = laterClient.OpenJob(later.Id, later.Token);
        await laterJob.PutAsync("large", large, cancellationToken: cts.Token);
        Assert.Equal(large, await laterJob.GetAsync("large", cancellationToken: cts.Token));
    }

    /// <summary>Steps the fake clock a second at a time (the telemetry ticks on it) until an event matches.</summary>
    private static async Task AdvanceUntilAsync(FakeTimeProvider time, ControllerServer controller, Func<ClusterEvent, bool> match, CancellationToken cancellationToken)
    {
        while (!controller.Events.Last(100).Any(match))
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(300, cancellationToken);
        }
    }

    /// <summary>A loopback address no one listens on now (the spare metadata address the nodes are told).</summary>
    private static string FreeLoopbackAddress()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return string.Create(CultureInfo.InvariantCulture, $"127.0.0.1:{((IPEndPoint)probe.LocalEndPoint!).Port}");
    }

    private static byte[] RandomBytes(int length)
    {
        var bytes = new byte[length];
        Random.Shared.NextBytes(bytes);
        return bytes;
    }

    /// <summary>
    /// Waits until the server at <paramref name="address"/> lists both nodes live with a share each, or with exactly
    /// <paramref name="capacities"/> (node id to bytes: every node whole again); returns what it lists then.
    /// </summary>
    private static async Task<Dictionary<uint, long>> WaitForNodesAsync(string address, JobToken token, Dictionary<uint, long>? capacities, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await using var client = await PocketClient.ConnectAsync(address, cancellationToken: cancellationToken);
                var nodes = (await Admin.PocketAdminExtensions.Admin(client, token).GetNodesAsync(cancellationToken)).Where(n => n.State == NodeState.Live && n.Capacity > 0).ToList();
                if (nodes.Count == 2 && (capacities is null || nodes.All(n => capacities.GetValueOrDefault(n.Id) == n.Capacity)))
                {
                    return nodes.ToDictionary(n => n.Id, n => n.Capacity);
                }
            }
            catch (PocketException)
            {
                // Not up yet.
            }

            await Task.Delay(100, cancellationToken);
        }
    }
}
