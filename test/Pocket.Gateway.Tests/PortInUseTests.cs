using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Embedded;
using Pocket.Metadata;
using Pocket.Networking;
using Pocket.StorageServer;

namespace Pocket.Gateway.Tests;

/// <summary>
/// A second server of any role on a port that is already served fails at once, naming the role and the port, and
/// the first one keeps serving: no listener shares a port (on Linux, ReuseAddress had let the second bind and take
/// half of the first one's connections).
/// </summary>
public sealed class PortInUseTests : IAsyncLifetime
{
    private GatewayHarness _harness = null!;

    public async Task InitializeAsync() => _harness = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    [Fact]
    public async Task ASecondMetadataServerOnABusyPortIsRefusedByName()
    {
        var busy = ParseEndPoint(_harness.Cluster.MetadataAddress);
        var second = new MetadataServer(new MetadataServerOptions { ClusterToken = _harness.Cluster.Options.ClusterToken, Listener = new FrameServerOptions { EndPoint = busy } }, NullLoggerFactory.Instance);
        await using (second)
        {
            var ex = await Assert.ThrowsAsync<PortInUseException>(() => second.StartAsync());
            AssertNames(ex, "metadata", busy.Port);
        }

        // The first one still answers.
        await using var client = await PocketClient.ConnectAsync(_harness.Cluster.MetadataAddress, new PocketClientOptions());
        Assert.NotEmpty(await _harness.Cluster.Admin(client).GetNodesAsync());
    }

    [Fact]
    public async Task AStorageNodeOnABusyPortIsRefusedByName()
    {
        // The metadata server's port is the one surely taken, whoever else runs on this machine.
        var busy = ParseEndPoint(_harness.Cluster.MetadataAddress);
        var node = new Pocket.StorageServer.StorageServer(
            new StorageServerOptions
            {
                Metadata = new DnsEndPoint(busy.Address.ToString(), busy.Port),
                ClusterToken = _harness.Cluster.Options.ClusterToken,
                Capacity = 16L << 20,
                Listener = new FrameServerOptions { EndPoint = busy },
            },
            NullLoggerFactory.Instance);
        await using (node)
        {
            var ex = await Assert.ThrowsAsync<PortInUseException>(() => node.StartAsync());
            AssertNames(ex, "storage", busy.Port);
        }
    }

    [Fact]
    public async Task ASecondControllerOnABusyPortIsRefusedByName()
    {
        var busy = new IPEndPoint(IPAddress.Loopback, _harness.Controller.Url.Port);
        var second = new ControllerServer(
            new ControllerOptions { MetadataAddress = _harness.Cluster.MetadataAddress, ClusterToken = _harness.Cluster.Options.ClusterToken, Listen = busy },
            new InProcessProvisioner(_harness.Cluster),
            NullLoggerFactory.Instance);
        await using (second)
        {
            var ex = await Assert.ThrowsAsync<PortInUseException>(() => second.StartAsync());
            AssertNames(ex, "controller", busy.Port);
        }

        using var alive = await _harness.ControllerHttp.GetAsync("/v1/cluster");
        Assert.Equal(HttpStatusCode.OK, alive.StatusCode);
    }

    [Fact]
    public async Task ASecondGatewayOnABusyPortIsRefusedByName()
    {
        var busy = new IPEndPoint(IPAddress.Loopback, _harness.Gateway.Url.Port);
        var state = Path.Combine(_harness.StateDirectory, "second");
        var second = new GatewayServer(GatewayHarness.Options(_harness.Controller.Url, state, _harness.Cluster.Options.ClusterToken) with { Listen = busy }, NullLoggerFactory.Instance);
        await using (second)
        {
            var ex = await Assert.ThrowsAsync<PortInUseException>(() => second.StartAsync());
            AssertNames(ex, "gateway", busy.Port);
        }

        await _harness.S3.ListBucketsAsync();
    }

    private static void AssertNames(PortInUseException ex, string role, int port)
    {
        Assert.Equal(role, ex.Role);
        Assert.Equal(port, ex.Port);
        Assert.Contains($"the {role} cannot listen on 127.0.0.1:{port}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("in use", ex.Message, StringComparison.Ordinal);
    }

    private static IPEndPoint ParseEndPoint(string address) => IPEndPoint.Parse(address);
}
