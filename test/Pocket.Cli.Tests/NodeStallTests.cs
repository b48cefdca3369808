using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Embedded;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// A storage node frozen with SIGSTOP (a stalled process, a paused machine) is suspect, not dead: readers of its blocks
/// get a typed, retryable NodeUnavailable at once instead of hanging, and when it resumes it is the same node with
/// every byte it held. Before, a 20 s freeze came back as a new, empty node and gets hung for the whole freeze.
/// </summary>
public sealed class NodeStallTests
{
    private const long NodeCapacity = 32L << 20;

    [Fact]
    public async Task AFrozenNodeIsSuspectWhileStoppedAndServesItsDataAgainWhenResumed()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));

        // Real time: suspect after 1 s of silence, dead only after 10 minutes (far beyond this test).
        await using var core = await PocketCluster.StartAsync(
            new PocketClusterOptions { StorageNodes = 0, NodeCapacity = NodeCapacity, PreTouchMemory = false, SuspectAfter = TimeSpan.FromSeconds(1), NodeTimeout = TimeSpan.FromMinutes(10) },
            cancellationToken: cts.Token);
        await using var provisioner = PocketProcess.StorageProvisioner(core);
        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, NodeCapacity), cts.Token);
        var pid = int.Parse(node.Handle, CultureInfo.InvariantCulture);
        await using var client = await core.ConnectAsync(cancellationToken: cts.Token);
        var job = await core.Admin(client).RegisterJobAsync("stall", cts.Token);
        var data = RandomNumberGenerator.GetBytes(4 << 20);
        await job.PutAsync("kept", data, cancellationToken: cts.Token);

        await SignalAsync("STOP", pid);
        try
        {
            await WaitForStateAsync(NodeState.Suspect);

            // Refused at once (a hang would run into the bound below and fail the test), naming the node.
            using (var bound = CancellationTokenSource.CreateLinkedTokenSource(cts.Token))
            {
                bound.CancelAfter(TimeSpan.FromSeconds(30));
                var unavailable = await Assert.ThrowsAsync<NodeUnavailableException>(async () => await job.GetAsync("kept", cancellationToken: bound.Token));
                Assert.Contains($"storage node {node.NodeId} ({node.Address})", unavailable.Message, StringComparison.Ordinal);
                Assert.Equal(Status.NodeUnavailable, unavailable.Status);
            }
        }
        finally
        {
            await SignalAsync("CONT", pid);
        }

        // Resumed: the same node (no new registration), live, every byte readable.
        await WaitForStateAsync(NodeState.Live);
        var nodes = await core.Admin(client).GetNodesAsync(cts.Token);
        var only = Assert.Single(nodes);
        Assert.Equal(node.NodeId, only.Id);
        Assert.Equal(data, await job.GetAsync("kept", cancellationToken: cts.Token));

        async Task WaitForStateAsync(NodeState state)
        {
            while ((await core.Admin(client).GetNodesAsync(cts.Token)).SingleOrDefault(n => n.Id == node.NodeId)?.State != state)
            {
                await Task.Delay(50, cts.Token);
            }
        }
    }

    private static async Task SignalAsync(string signal, int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false })!;
        await kill.WaitForExitAsync();
        Assert.Equal(0, kill.ExitCode);
    }
}
