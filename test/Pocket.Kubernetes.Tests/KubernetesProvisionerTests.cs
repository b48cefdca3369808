using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// What the provisioner sends to the Kubernetes API, read back with the library's own types. The API server is a
/// real HTTP server on loopback that records requests (<see cref="FakeApiServer"/>); no cluster runs here.
/// </summary>
public sealed class KubernetesProvisionerTests
{
    private const long MiB = 1L << 20;
    private const long GiB = 1L << 30;
    private const string Ns = "pocket-test";

    private static KubernetesProvisionerOptions Options() => new()
    {
        Namespace = Ns,
        Image = "registry.example/pocket:1.2",
        MetadataAddress = "pocket-metadata:7070",
        Labels = new Dictionary<string, string> { ["team"] = "analytics" },
        NodeSelector = new Dictionary<string, string> { ["kubernetes.io/os"] = "linux" },
        WaitUntilReady = false,
        PollInterval = TimeSpan.FromMilliseconds(1),
    };

    private static KubernetesProvisioner Provisioner(FakeApiServer api, KubernetesProvisionerOptions options) =>
        new(options, api.Client(), NullLoggerFactory.Instance);

    private static RecordedRequest Single(FakeApiServer api, string method) => Assert.Single(api.Requests, r => r.Method == method);

    [Fact]
    public async Task DramNodeIsAPodRunningPocketStorageWithItsCapacityInMemory()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());

        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);

        var post = Single(api, "POST");
        Assert.Equal($"/api/v1/namespaces/{Ns}/pods", post.Path);
        var pod = post.BodyAs<V1Pod>();
        Assert.Equal("v1", pod.ApiVersion);
        Assert.Equal("Pod", pod.Kind);
        Assert.Equal(pod.Metadata.Name, node.Handle);
        Assert.Matches("^pocket-storage-dram-[a-z0-9]{8}$", node.Handle);
        Assert.Equal(NodeTier.Dram, node.Tier);
        Assert.Null(node.NodeId);
        Assert.Null(node.Address);

        Assert.Equal("pocket", pod.Metadata.Labels["app.kubernetes.io/name"]);
        Assert.Equal("storage", pod.Metadata.Labels["pocket.io/role"]);
        Assert.Equal("dram", pod.Metadata.Labels["pocket.io/tier"]);
        Assert.Equal("analytics", pod.Metadata.Labels["team"]);
        Assert.Equal("1073741824", pod.Metadata.Annotations["pocket.io/capacity-bytes"]);

        var container = Assert.Single(pod.Spec.Containers);
        Assert.Equal("registry.example/pocket:1.2", container.Image);
        Assert.Equal(["pocket"], container.Command);
        Assert.Equal(
            ["storage", "--metadata", "pocket-metadata:7070", "--tier", "dram", "--capacity", "1073741824", "--host", "$(POD_IP)", "--port", "7100", "--metrics-port", "9464"],
            container.Args);

        // The pod IP comes from the downward API, the token from the Secret; no value is written inline.
        var podIp = Assert.Single(container.Env, e => e.Name == "POD_IP");
        Assert.Equal("status.podIP", podIp.ValueFrom.FieldRef.FieldPath);
        var token = Assert.Single(container.Env, e => e.Name == "POCKET_CLUSTER_TOKEN");
        Assert.Equal("pocket-cluster-token", token.ValueFrom.SecretKeyRef.Name);
        Assert.Equal("token", token.ValueFrom.SecretKeyRef.Key);
        Assert.All(container.Env, e => Assert.Null(e.Value));

        // Memory: capacity + overhead, request = limit; CPU requested, not limited.
        var memory = 1 * GiB + 256 * MiB;
        Assert.Equal(memory, container.Resources.Requests["memory"].ToInt64());
        Assert.Equal(memory, container.Resources.Limits["memory"].ToInt64());
        Assert.Equal("1280Mi", container.Resources.Limits["memory"].ToString());
        Assert.Equal(1, container.Resources.Requests["cpu"].ToInt64());
        Assert.False(container.Resources.Limits.ContainsKey("cpu"));
        Assert.False(container.Resources.Requests.ContainsKey("ephemeral-storage"));

        var port = Assert.Single(container.Ports, p => p.Name == "pocket");
        Assert.Equal(7100, port.ContainerPort);
        Assert.Equal(9464, Assert.Single(container.Ports, p => p.Name == "metrics").ContainerPort);
        Assert.Equal("7100", container.ReadinessProbe.TcpSocket.Port.Value);
        Assert.Null(container.VolumeMounts);

        Assert.Equal("Never", pod.Spec.RestartPolicy);
        Assert.False(pod.Spec.AutomountServiceAccountToken);
        Assert.False(pod.Spec.EnableServiceLinks);
        Assert.Equal(10, pod.Spec.TerminationGracePeriodSeconds);
        Assert.Equal("linux", pod.Spec.NodeSelector["kubernetes.io/os"]);
        Assert.Null(pod.Spec.Volumes);
        Assert.True(container.SecurityContext.RunAsNonRoot);
        Assert.False(container.SecurityContext.AllowPrivilegeEscalation);
    }

    [Fact]
    public async Task AWarmPoolNodeIsStartedStandby()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());

        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB, Standby: true), CancellationToken.None);

        var container = Assert.Single(Single(api, "POST").BodyAs<V1Pod>().Spec.Containers);
        Assert.Equal("--standby", container.Args[^1]);
    }

    [Fact]
    public async Task SsdNodeKeepsItsFileOnAnEmptyDirOfItsCapacity()
    {
        await using var api = await FakeApiServer.StartAsync();
        var options = Options() with
        {
            BlockSize = 1 << 20,
            VerboseLogs = true,
            Ssd = new TierPodOptions { NodeSelector = new Dictionary<string, string> { ["pocket.io/disk"] = "nvme" }, CpuLimit = "2" },
        };
        using var provisioner = Provisioner(api, options);

        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Ssd, 100 * GiB), CancellationToken.None);

        var pod = Single(api, "POST").BodyAs<V1Pod>();
        Assert.Matches("^pocket-storage-ssd-", node.Handle);
        Assert.Equal("ssd", pod.Metadata.Labels["pocket.io/tier"]);
        var container = Assert.Single(pod.Spec.Containers);
        Assert.Equal(
            ["storage", "--metadata", "pocket-metadata:7070", "--tier", "ssd", "--capacity", "107374182400", "--host", "$(POD_IP)", "--port", "7100",
             "--block-size", "1048576", "--data-dir", "/data", "--verbose", "--metrics-port", "9464"],
            container.Args);

        // The volume holds the capacity plus room for the file system; the scheduler is asked for that much local disk.
        var volumeBytes = 100 * GiB + 64 * MiB;
        var volume = Assert.Single(pod.Spec.Volumes);
        Assert.Equal(volumeBytes, volume.EmptyDir.SizeLimit.ToInt64());
        Assert.Null(volume.Ephemeral);
        var mount = Assert.Single(container.VolumeMounts);
        Assert.Equal(volume.Name, mount.Name);
        Assert.Equal("/data", mount.MountPath);
        Assert.Equal(volumeBytes, container.Resources.Requests["ephemeral-storage"].ToInt64());
        Assert.Equal(volumeBytes, container.Resources.Limits["ephemeral-storage"].ToInt64());

        // The file is on disk: memory is the overhead alone.
        Assert.Equal(256 * MiB, container.Resources.Requests["memory"].ToInt64());
        Assert.Equal(2, container.Resources.Limits["cpu"].ToInt64());
        Assert.Equal("nvme", pod.Spec.NodeSelector["pocket.io/disk"]);
        Assert.Equal("linux", pod.Spec.NodeSelector["kubernetes.io/os"]);
        Assert.Equal(1654, pod.Spec.SecurityContext.FsGroup);
    }

    [Fact]
    public async Task HddNodeCanClaimAVolumeOfAStorageClassThatLivesAndDiesWithThePod()
    {
        await using var api = await FakeApiServer.StartAsync();
        var options = Options() with
        {
            Hdd = new TierPodOptions { Volume = StorageVolumeKind.EphemeralVolumeClaim, StorageClassName = "standard-hdd", DiskOverheadBytes = 0 },
        };
        using var provisioner = Provisioner(api, options);

        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Hdd, 2048 * GiB), CancellationToken.None);

        var pod = Single(api, "POST").BodyAs<V1Pod>();
        var volume = Assert.Single(pod.Spec.Volumes);
        Assert.Null(volume.EmptyDir);
        var claim = volume.Ephemeral.VolumeClaimTemplate;
        Assert.Equal("standard-hdd", claim.Spec.StorageClassName);
        Assert.Equal(["ReadWriteOnce"], claim.Spec.AccessModes);
        Assert.Equal("2Ti", claim.Spec.Resources.Requests["storage"].ToString());
        Assert.Equal("storage", claim.Metadata.Labels["pocket.io/role"]);
        var container = Assert.Single(pod.Spec.Containers);
        Assert.Equal("/data", Assert.Single(container.VolumeMounts).MountPath);
        Assert.False(container.Resources.Requests.ContainsKey("ephemeral-storage"));
    }

    [Fact]
    public async Task StopDeletesThePodWithTheGracePeriod()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options() with { DeleteGracePeriod = TimeSpan.FromSeconds(30) });
        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);
        Assert.Equal(30, Single(api, "POST").BodyAs<V1Pod>().Spec.TerminationGracePeriodSeconds);

        await provisioner.StopNodeAsync(node, CancellationToken.None);

        var delete = Single(api, "DELETE");
        Assert.Equal($"/api/v1/namespaces/{Ns}/pods/{node.Handle}", delete.Path);
        Assert.Equal("30", delete.Query["gracePeriodSeconds"]);
        Assert.Empty(api.Pods);
    }

    [Fact]
    public async Task StoppingAPodThatIsAlreadyGoneIsNotAnError()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());

        await provisioner.StopNodeAsync(new ProvisionedNode(NodeTier.Dram, "pocket-storage-dram-gone2345", null, null), CancellationToken.None);

        Assert.Equal("/api/v1/namespaces/pocket-test/pods/pocket-storage-dram-gone2345", Single(api, "DELETE").Path);
    }

    [Theory]
    [InlineData("kube-apiserver")]
    [InlineData("pocket-storage")]
    [InlineData("../../secrets/pocket-storage-x")]
    public async Task StopRefusesHandlesThatAreNotItsPods(string handle)
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());

        await Assert.ThrowsAsync<ArgumentException>(() => provisioner.StopNodeAsync(new ProvisionedNode(NodeTier.Dram, handle, null, null), CancellationToken.None));

        Assert.Empty(api.Requests);
    }

    [Theory]
    [InlineData(403, "Forbidden", "pods is forbidden: User \"system:serviceaccount:pocket:pocket-controller\" cannot create resource \"pods\" in API group \"\" in the namespace \"pocket-test\"")]
    [InlineData(403, "Forbidden", "pods \"pocket-storage-dram-x\" is forbidden: exceeded quota: pocket, requested: limits.memory=1280Mi, used: limits.memory=30Gi, limited: limits.memory=30Gi")]
    [InlineData(422, "Invalid", "Pod \"pocket-storage-dram-x\" is invalid: spec.containers[0].image: Required value")]
    [InlineData(500, "InternalError", "Internal error occurred: etcdserver: request timed out")]
    public async Task ApiServerErrorsOnCreateBecomeProvisioningErrorsInTheServersWords(int status, string reason, string message)
    {
        await using var api = await FakeApiServer.StartAsync();
        api.Override = r => r.Method == "POST" ? ApiAnswer.Error(status, reason, message) : null;
        using var provisioner = Provisioner(api, Options());

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None));

        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.Contains(status.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
        Assert.StartsWith("creating storage pod pocket-storage-dram-", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnErrorThatIsNotAStatusObjectStillReachesTheMessage()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.Override = r => r.Method == "POST" ? new ApiAnswer(502, "upstream connect error or disconnect/reset before headers") : null;
        using var provisioner = Provisioner(api, Options());

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None));

        Assert.Contains("502", error.Message, StringComparison.Ordinal);
        Assert.Contains("upstream connect error", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ApiServerErrorOnDeleteBecomesAProvisioningError()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());
        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);
        api.Override = r => r.Method == "DELETE" ? ApiAnswer.Error(403, "Forbidden", "pods \"x\" is forbidden: User cannot delete resource \"pods\"") : null;

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StopNodeAsync(node, CancellationToken.None));

        Assert.Contains("cannot delete resource", error.Message, StringComparison.Ordinal);
        Assert.StartsWith($"deleting storage pod {node.Handle}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnUnreachableApiServerIsAProvisioningError()
    {
        var api = await FakeApiServer.StartAsync();
        var client = api.Client();
        await api.DisposeAsync();
        using var provisioner = new KubernetesProvisioner(Options(), client, NullLoggerFactory.Instance);

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None));

        Assert.Contains("could not be reached", error.Message, StringComparison.Ordinal);
        client.Dispose();
    }

    [Fact]
    public async Task WaitingStartReturnsOnceThePodIsReadyWithTheAddressItsNodeAdvertises()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.StatusOnRead = (_, read) => read switch
        {
            0 => FakeApiServer.Pending("0/3 nodes are available: 3 Insufficient memory."),
            1 => FakeApiServer.Pending(),
            2 => new V1PodStatus { Phase = "Running", PodIP = "10.244.3.9", Conditions = [new V1PodCondition { Type = "Ready", Status = "False" }] },
            _ => FakeApiServer.RunningAndReady("10.244.3.9"),
        };
        using var provisioner = Provisioner(api, Options() with { WaitUntilReady = true });

        var node = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);

        Assert.Equal("10.244.3.9:7100", node.Address);
        Assert.Null(node.NodeId);
        var reads = api.Requests.Where(r => r.Method == "GET").ToList();
        Assert.Equal(4, reads.Count);
        Assert.All(reads, r => Assert.Equal($"/api/v1/namespaces/{Ns}/pods/{node.Handle}", r.Path));
        Assert.DoesNotContain(api.Requests, r => r.Method == "DELETE");
        Assert.True(api.Pods.ContainsKey(node.Handle));
    }

    [Fact]
    public async Task APodThatFailsToStartIsReportedAndDeleted()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.StatusOnRead = (_, _) => new V1PodStatus
        {
            Phase = "Failed",
            ContainerStatuses =
            [
                new V1ContainerStatus
                {
                    Name = "storage",
                    Image = "pocket",
                    ImageID = string.Empty,
                    Ready = false,
                    RestartCount = 0,
                    State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 1, Reason = "Error", Message = "the metadata server refused the cluster token" } },
                },
            ],
        };
        using var provisioner = Provisioner(api, Options() with { WaitUntilReady = true });

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None));

        Assert.Contains("exited with code 1", error.Message, StringComparison.Ordinal);
        Assert.Contains("refused the cluster token", error.Message, StringComparison.Ordinal);
        var delete = Single(api, "DELETE");
        Assert.Equal("0", delete.Query["gracePeriodSeconds"]);
        Assert.Empty(api.Pods);
    }

    [Fact]
    public async Task APodThatIsNeverReadyIsDeletedAndTheLastReasonReported()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.StatusOnRead = (_, _) => FakeApiServer.Pending("0/3 nodes are available: 3 Insufficient memory.");
        using var provisioner = Provisioner(api, Options() with { WaitUntilReady = true, StartTimeout = TimeSpan.FromMilliseconds(50) });

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 60 * GiB), CancellationToken.None));

        Assert.Contains("was not ready within", error.Message, StringComparison.Ordinal);
        Assert.Contains("Insufficient memory", error.Message, StringComparison.Ordinal);
        Assert.Single(api.Requests, r => r.Method == "DELETE");
        Assert.Empty(api.Pods);
    }

    [Fact]
    public async Task ACancelledStartDeletesThePodItCreated()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var cancel = new CancellationTokenSource();
        api.StatusOnRead = (_, _) =>
        {
            // The controller gives up (its own node-start deadline) while the pod is still pending.
            cancel.Cancel();
            return FakeApiServer.Pending();
        };
        using var provisioner = Provisioner(api, Options() with { WaitUntilReady = true });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), cancel.Token));

        Assert.Single(api.Requests, r => r.Method == "DELETE");
        Assert.Empty(api.Pods);
    }

    [Fact]
    public async Task ListFindsTheStoragePodsWithTheirTiersAndAddresses()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options());
        var dram = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);
        var ssd = await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Ssd, GiB), CancellationToken.None);
        await provisioner.WaitUntilReadyAsync(dram.Handle, CancellationToken.None);

        var nodes = await provisioner.ListNodesAsync(CancellationToken.None);

        var list = Assert.Single(api.Requests, r => r.Method == "GET" && r.Path == $"/api/v1/namespaces/{Ns}/pods");
        Assert.Equal("app.kubernetes.io/name=pocket,pocket.io/role=storage", list.Query["labelSelector"]);
        Assert.Equal(2, nodes.Count);
        Assert.Contains(new ProvisionedNode(NodeTier.Dram, dram.Handle, null, "10.244.1.7:7100"), nodes);
        Assert.Contains(new ProvisionedNode(NodeTier.Ssd, ssd.Handle, null, null), nodes);
    }

    [Fact]
    public async Task ADisabledTierIsNotOfferedNorStarted()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options() with { Hdd = new TierPodOptions { Enabled = false } });

        Assert.Equal([NodeTier.Dram, NodeTier.Ssd], provisioner.Tiers);
        await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Hdd, GiB), CancellationToken.None));
        Assert.Empty(api.Requests);
    }

    [Fact]
    public async Task CustomizePodHasTheLastSay()
    {
        await using var api = await FakeApiServer.StartAsync();
        var options = Options() with
        {
            CustomizePod = pod => pod.Spec.Tolerations = [new V1Toleration { Key = "pocket.io/storage", OperatorProperty = "Exists", Effect = "NoSchedule" }],
        };
        using var provisioner = Provisioner(api, options);

        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, GiB), CancellationToken.None);

        var toleration = Assert.Single(Single(api, "POST").BodyAs<V1Pod>().Spec.Tolerations);
        Assert.Equal("pocket.io/storage", toleration.Key);
    }
}
