using System.Diagnostics;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// Dead nodes are replaced without the autoscaler: a real `pocket storage` child is killed with SIGKILL, the metadata
/// server declares it dead, and the controller (on a fake clock) starts a replacement of the same tier.
/// </summary>
public sealed class NodeReplacementTests
{
    private const long NodeCapacity = 32L << 20;

    [Fact]
    public async Task AKilledNodeIsReplacedWithAnEventWithoutAutoscaling()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var cluster = await ProcessCluster.StartAsync(
            new ProcessClusterOptions
            {
                StorageNodes = 0,
                NodeCapacity = NodeCapacity,
                Controller = options => options with { MinimumNodes = new Dictionary<NodeTier, int> { [NodeTier.Dram] = 2 } },
            },
            cts.Token);
        var controller = cluster.Controller;
        var provisioner = cluster.Provisioner;
        Assert.Null(controller.Autoscaler);
        var first = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, NodeCapacity), cts.Token);
        var second = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, NodeCapacity), cts.Token);
        controller.TrackNode(first);
        controller.TrackNode(second);
        await using var admin = await cluster.ConnectAsync(cancellationToken: cts.Token);

        // A job's object on the surviving node stays readable throughout.
        var job = await admin.Admin(cluster.Token).RegisterJobAsync("survivor", cts.Token);
        var kept = new byte[1 << 20];
        Random.Shared.NextBytes(kept);

        using (var victim = Process.GetProcessById(int.Parse(first.Handle, System.Globalization.CultureInfo.InvariantCulture)))
        {
            victim.Kill();
            await victim.WaitForExitAsync(cts.Token);
        }

        // Its registration connection closed, so the metadata server declares it dead at once.
        await WaitUntilAsync(async () => (await admin.Admin(cluster.Token).GetNodesAsync(cts.Token)).Any(n => n.Id == first.NodeId && n.State == NodeState.Dead), cts.Token);
        await job.PutAsync("kept", kept, cancellationToken: cts.Token);

        // Telemetry polls on the controller's (fake) clock: a tick notices the death and starts a replacement.
        await WaitUntilAsync(
            () =>
            {
                cluster.Time.Advance(TimeSpan.FromSeconds(1));
                return Task.FromResult(controller.Events.Last(100).Any(e => e.Kind is "node-replaced" or "replace-failed"));
            },
            cts.Token);
        await controller.Replacements;

        var events = controller.Events.Last(100);
        Assert.DoesNotContain(events, e => e.Kind == "replace-failed");
        var replacing = Assert.Single(events, e => e.Kind == "node-replacing");
        Assert.Equal(first.NodeId, replacing.NodeId);
        Assert.Contains("minimum is 2", replacing.Reason, StringComparison.Ordinal);
        var replaced = Assert.Single(events, e => e.Kind == "node-replaced");
        Assert.NotEqual(first.NodeId, replaced.NodeId);
        Assert.Contains($"replaces dead node {first.NodeId}", replaced.Reason, StringComparison.Ordinal);

        var nodes = await admin.Admin(cluster.Token).GetNodesAsync(cts.Token);
        Assert.Equal(2, nodes.Count(n => n.State == NodeState.Live && n.Tier == NodeTier.Dram));
        Assert.Contains(nodes, n => n.Id == replaced.NodeId && n.State == NodeState.Live && n.Capacity == NodeCapacity);
        Assert.Equal(kept, await job.GetAsync("kept", cancellationToken: cts.Token));

        // More ticks start nothing more: the tier is at its minimum again.
        for (var i = 0; i < 3; i++)
        {
            cluster.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Yield();
        }

        await controller.Replacements;
        Assert.Single(controller.Events.Last(100), e => e.Kind == "node-replacing");
        Assert.Equal(2, provisioner.Running);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, CancellationToken cancellationToken)
    {
        while (!await condition())
        {
            cancellationToken.ThrowIfCancellationRequested();
            await Task.Delay(50, cancellationToken);
        }
    }
}
