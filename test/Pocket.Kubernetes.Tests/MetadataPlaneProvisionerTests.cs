using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes.Tests;

/// <summary>
/// The provisioner running the metadata plane: what it sends to start, scale, stop and replace metadata servers, read
/// back with the library's own types from a real HTTP server on loopback posing as the API server (no cluster runs here).
/// </summary>
public sealed class MetadataPlaneProvisionerTests
{
    private const string Ns = "pocket-test";

    private static KubernetesProvisionerOptions Options() => new()
    {
        Namespace = Ns,
        Image = "registry.example/pocket:1.2",
        MetadataAddress = null,
        MaxMetadataServers = 3,
        PollInterval = TimeSpan.FromMilliseconds(1),
    };

    private static KubernetesProvisioner Provisioner(FakeApiServer api, KubernetesProvisionerOptions? options = null) =>
        new(options ?? Options(), api.Client(), NullLoggerFactory.Instance);

    private static string Address(int index) => $"pocket-metadata-plane-{index}.pocket-metadata-plane.{Ns}.svc:7000";

    private static List<string> Calls(FakeApiServer api) => [.. api.Requests.Select(r => $"{r.Method} {r.Path}")];

    [Fact]
    public async Task TheFirstStartMakesTheHeadlessServiceThenAPodAtTheServersStableAddress()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api);

        var server = await provisioner.StartMetadataAsync(new MetadataServerRequest(7000, 0, 3), CancellationToken.None);

        Assert.Equal("pocket-metadata-plane-0", server.Handle);
        Assert.Equal(Address(0), server.Address);
        Assert.Equal(Address(0), provisioner.MetadataServerAddress(0));
        Assert.Equal(
            [
                $"POST /api/v1/namespaces/{Ns}/services",
                $"GET /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-0",
                $"DELETE /api/v1/namespaces/{Ns}/secrets/pocket-metadata-plane-0-lost-jobs",
                $"POST /api/v1/namespaces/{Ns}/pods",
                $"GET /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-0",
            ],
            Calls(api));

        var service = api.Requests.First(r => r.Path.EndsWith("/services", StringComparison.Ordinal)).BodyAs<V1Service>();
        Assert.Equal("pocket-metadata-plane", service.Metadata.Name);
        Assert.Equal("None", service.Spec.ClusterIP);
        var pod = api.Requests.Single(r => r.Method == "POST" && r.Path.EndsWith("/pods", StringComparison.Ordinal)).BodyAs<V1Pod>();
        Assert.Equal("pocket-metadata-plane-0", pod.Metadata.Name);

        // hostname + subdomain (the Service's name) is what gives the pod its DNS name in the headless Service.
        Assert.Equal("pocket-metadata-plane-0", pod.Spec.Hostname);
        Assert.Equal(service.Metadata.Name, pod.Spec.Subdomain);
        Assert.All(service.Spec.Selector, label => Assert.Equal(label.Value, pod.Metadata.Labels[label.Key]));
        Assert.Equal("0", pod.Metadata.Labels["pocket.io/metadata-server"]);
        Assert.Equal("Never", pod.Spec.RestartPolicy);
        var container = Assert.Single(pod.Spec.Containers);
        Assert.Equal(
            ["metadata", "--host", "$(POD_IP)", "--port", "7000", "--metrics-port", "9464", "--job-numbers", "0/3"],
            container.Args);
        Assert.Null(container.VolumeMounts);
        Assert.Null(pod.Spec.Volumes);
        Assert.Equal("pocket-cluster-token", Assert.Single(container.Env, e => e.Name == "POCKET_CLUSTER_TOKEN").ValueFrom.SecretKeyRef.Name);

        // A second server: the Service is made once per provisioner.
        var second = await provisioner.StartMetadataAsync(new MetadataServerRequest(0, 1, 3), CancellationToken.None);
        Assert.Equal(Address(1), second.Address);
        Assert.Single(api.Requests, r => r.Path.EndsWith("/services", StringComparison.Ordinal));
        Assert.Equal(["pocket-metadata-plane-0", "pocket-metadata-plane-1"], api.Pods.Keys.Order());
    }

    [Fact]
    public async Task AServiceMadeEarlierIsUsedAsItIs()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.Override = r => r.Method == "POST" && r.Path.EndsWith("/services", StringComparison.Ordinal)
            ? ApiAnswer.Error(409, "AlreadyExists", "services \"pocket-metadata-plane\" already exists")
            : null;
        using var provisioner = Provisioner(api);

        var server = await provisioner.StartMetadataAsync(new MetadataServerRequest(0, 2, 3), CancellationToken.None);

        Assert.Equal(Address(2), server.Address);
        Assert.True(api.Pods.ContainsKey("pocket-metadata-plane-2"));
    }

    [Fact]
    public async Task AnyServerCanBeStoppedNotOnlyTheHighest()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api);
        var servers = new List<ProvisionedMetadata>();
        for (var i = 0; i < 3; i++)
        {
            servers.Add(await provisioner.StartMetadataAsync(new MetadataServerRequest(0, i, 3), CancellationToken.None));
        }

        // The scaler drains the least loaded server, whichever it is; here the middle one.
        await provisioner.StopMetadataAsync(servers[1], CancellationToken.None);

        Assert.Equal(["pocket-metadata-plane-0", "pocket-metadata-plane-2"], api.Pods.Keys.Order());
        var delete = Assert.Single(api.Requests, r => r.Method == "DELETE" && r.Path.EndsWith("/pods/pocket-metadata-plane-1", StringComparison.Ordinal));
        Assert.Equal("10", delete.Query["gracePeriodSeconds"]);
        Assert.Contains(api.Requests, r => r.Method == "DELETE" && r.Path == $"/api/v1/namespaces/{Ns}/secrets/pocket-metadata-plane-1-lost-jobs");

        // Stopped twice (a pod already gone) is not an error.
        await provisioner.StopMetadataAsync(servers[1], CancellationToken.None);
    }

    [Fact]
    public async Task AReplacementTakesTheDeadPodsPlaceAndGetsItsLostJobsFromASecret()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api);
        var old = await provisioner.StartMetadataAsync(new MetadataServerRequest(0, 1, 3), CancellationToken.None);
        var oldUid = api.Pods[old.Handle].Metadata.Uid;

        // The old pod exited (restartPolicy Never keeps it, Failed): the controller declared its jobs lost.
        var lostAt = new DateTimeOffset(2026, 12, 4, 13, 0, 0, TimeSpan.Zero);
        var lost = new[] { new LostJobLine(JobToken.NewRandom(), "sort-2", lostAt), new LostJobLine(JobToken.NewRandom(), "sort-5", lostAt) };
        api.StatusOnRead = (pod, _) => pod.Metadata.Uid == oldUid
            ? new V1PodStatus { Phase = "Failed", ContainerStatuses = [new V1ContainerStatus { Name = "metadata", State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 137, Reason = "OOMKilled" } } }] }
            : FakeApiServer.RunningAndReady("10.244.2.9");
        while (api.Requests.TryDequeue(out _))
        {
        }

        var replacement = await provisioner.StartMetadataAsync(new MetadataServerRequest(7000, 1, 3) { LostJobs = lost }, CancellationToken.None);

        Assert.Equal(old.Address, replacement.Address);
        Assert.Equal(old.Handle, replacement.Handle);
        Assert.NotEqual(oldUid, api.Pods[replacement.Handle].Metadata.Uid);
        Assert.Equal(
            [
                $"GET /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-1",
                $"DELETE /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-1",
                $"GET /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-1",
                $"DELETE /api/v1/namespaces/{Ns}/secrets/pocket-metadata-plane-1-lost-jobs",
                $"POST /api/v1/namespaces/{Ns}/secrets",
                $"POST /api/v1/namespaces/{Ns}/pods",
                $"GET /api/v1/namespaces/{Ns}/pods/pocket-metadata-plane-1",
            ],
            Calls(api));
        Assert.Equal("0", api.Requests.First(r => r.Method == "DELETE").Query["gracePeriodSeconds"]);

        // The tokens travel in a Secret (never in the pod spec), in the lost-jobs file format the role reads.
        var secret = api.Requests.Single(r => r.Method == "POST" && r.Path.EndsWith("/secrets", StringComparison.Ordinal)).BodyAs<V1Secret>();
        Assert.Equal("pocket-metadata-plane-1-lost-jobs", secret.Metadata.Name);
        var file = Path.Combine(Directory.CreateTempSubdirectory("pocket-k8s-lost-").FullName, "lost-jobs");
        try
        {
            await File.WriteAllTextAsync(file, secret.StringData["lost-jobs"]);
            Assert.Equal(lost, RoleCommandLine.ReadLostJobs(file));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(file)!, recursive: true);
        }

        var pod = api.Requests.Single(r => r.Method == "POST" && r.Path.EndsWith("/pods", StringComparison.Ordinal)).BodyAs<V1Pod>();
        var container = Assert.Single(pod.Spec.Containers);
        Assert.Equal("/var/run/pocket/lost/lost-jobs", container.Args[container.Args.IndexOf("--lost-jobs") + 1]);
        Assert.Equal("1/3", container.Args[container.Args.IndexOf("--job-numbers") + 1]);
        var mount = Assert.Single(container.VolumeMounts);
        Assert.Equal("/var/run/pocket/lost", mount.MountPath);
        Assert.True(mount.ReadOnlyProperty);
        var volume = Assert.Single(pod.Spec.Volumes);
        Assert.Equal(mount.Name, volume.Name);
        Assert.Equal(secret.Metadata.Name, volume.Secret.SecretName);
        Assert.DoesNotContain(lost[0].Token.ToString(), api.Requests.Single(r => r.Method == "POST" && r.Path.EndsWith("/pods", StringComparison.Ordinal)).Body, StringComparison.Ordinal);

        // Stopping it removes the Secret with the pod; the next start at that place mounts no old tokens.
        await provisioner.StopMetadataAsync(replacement, CancellationToken.None);
        Assert.Empty(api.Pods);
        Assert.DoesNotContain(api.Objects.Keys, k => k.StartsWith("secrets/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task TheControllersRolesAllowEveryCallThePlaneMakesAndThePlaneRoleIsNeededForIt()
    {
        // Every call of a plane's life (start two servers, replace one with lost jobs, stop both) must be one the
        // shipped Roles allow: the controller's own (pods) and the plane's (services, secrets); the first alone is not
        // enough, so a cluster that runs the plane needs deploy/kubernetes/metadata-plane/ applied.
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api);
        var first = await provisioner.StartMetadataAsync(new MetadataServerRequest(7000, 0, 3), CancellationToken.None);
        var second = await provisioner.StartMetadataAsync(new MetadataServerRequest(7000, 1, 3), CancellationToken.None);
        var secondUid = api.Pods[second.Handle].Metadata.Uid;
        api.StatusOnRead = (pod, _) => pod.Metadata.Uid == secondUid
            ? new V1PodStatus { Phase = "Failed" }
            : FakeApiServer.RunningAndReady("10.244.2.9");
        var replaced = await provisioner.StartMetadataAsync(new MetadataServerRequest(7000, 1, 3) { LostJobs = [new LostJobLine(JobToken.NewRandom(), "sort-1", DateTimeOffset.UnixEpoch)] }, CancellationToken.None);
        await provisioner.StopMetadataAsync(replaced, CancellationToken.None);
        await provisioner.StopMetadataAsync(first, CancellationToken.None);

        var calls = api.Requests.Select(Permission).Distinct().ToList();
        var controller = Rules("01-controller-rbac.yaml", "pocket-controller");
        var plane = Rules("metadata-plane/controller-plane-rbac.yaml", "pocket-controller-metadata-plane");
        Assert.All(calls, call => Assert.True(controller.Concat(plane).Contains(call), $"no shipped Role allows {call}"));
        Assert.Contains(calls, call => !controller.Contains(call));

        var binding = Assert.Single(ManifestTests.Load("metadata-plane/controller-plane-rbac.yaml").OfType<V1RoleBinding>());
        Assert.Equal("pocket-controller-metadata-plane", binding.RoleRef.Name);
        Assert.Equal("pocket-controller", Assert.Single(binding.Subjects).Name);

        static string Permission(RecordedRequest request)
        {
            // /api/v1/namespaces/NS/RESOURCE[/NAME]
            var parts = request.Path.Split('/', StringSplitOptions.RemoveEmptyEntries);
            var verb = request.Method switch
            {
                "POST" => "create",
                "DELETE" => "delete",
                "GET" when request.Query.ContainsKey("watch") => "watch",
                "GET" => parts.Length > 5 ? "get" : "list",
                _ => request.Method,
            };
            return $"{verb} {parts[4]}";
        }

        static HashSet<string> Rules(string file, string role) =>
            [.. ManifestTests.Load(file).OfType<V1Role>().Single(r => r.Metadata.Name == role).Rules
                .Where(rule => rule.ApiGroups.SequenceEqual([string.Empty]))
                .SelectMany(rule => rule.Resources.SelectMany(resource => rule.Verbs.Select(verb => $"{verb} {resource}")))];
    }

    [Fact]
    public async Task StoragePodsAreGivenEveryAddressThePlaneMayHave()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api, Options() with { WaitUntilReady = false });

        await provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 1L << 30), CancellationToken.None);

        var container = Assert.Single(api.Requests.Single(r => r.Method == "POST").BodyAs<V1Pod>().Spec.Containers);
        Assert.Equal(string.Join(',', Address(0), Address(1), Address(2)), container.Args[container.Args.IndexOf("--metadata") + 1]);
    }

    [Theory]
    [InlineData("services", 403, "Forbidden", "services is forbidden: User \"system:serviceaccount:pocket:controller\" cannot create resource \"services\"")]
    [InlineData("pods", 409, "AlreadyExists", "pods \"pocket-metadata-plane-0\" already exists")]
    [InlineData("pods", 500, "InternalError", "etcdserver: request timed out")]
    [InlineData("secrets", 422, "Invalid", "Secret \"pocket-metadata-plane-0-lost-jobs\" is invalid")]
    public async Task AnAPIServerRefusalIsAClearErrorAndLeavesNoPodBehind(string resource, int status, string reason, string message)
    {
        await using var api = await FakeApiServer.StartAsync();
        api.Override = r => r.Method == "POST" && r.Path.EndsWith("/" + resource, StringComparison.Ordinal) ? ApiAnswer.Error(status, reason, message) : null;
        using var provisioner = Provisioner(api);
        var request = new MetadataServerRequest(0, 0, 3) { LostJobs = [new LostJobLine(JobToken.NewRandom(), "j-1", DateTimeOffset.UnixEpoch)] };

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartMetadataAsync(request, CancellationToken.None));

        Assert.Contains($"the Kubernetes API server answered {status}", error.Message, StringComparison.Ordinal);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.Empty(api.Pods);
        Assert.DoesNotContain(api.Objects.Keys, k => k.StartsWith("secrets/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnAPIServerThatDoesNotAnswerIsAClearError()
    {
        await using var api = await FakeApiServer.StartAsync();
        var never = new TaskCompletionSource();
        api.Before = r => r.Method == "POST" && r.Path.EndsWith("/pods", StringComparison.Ordinal) ? never.Task : Task.CompletedTask;
        using var provisioner = Provisioner(api, Options() with { RequestTimeout = TimeSpan.FromMilliseconds(300) });

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartMetadataAsync(new MetadataServerRequest(0, 0, 3), CancellationToken.None));

        never.SetResult();
        Assert.Equal("creating metadata pod pocket-metadata-plane-0: the Kubernetes API server did not answer within 0.3 s", error.Message);
    }

    [Fact]
    public async Task APodThatFailsIsDeletedAndSaysWhy()
    {
        await using var api = await FakeApiServer.StartAsync();
        api.StatusOnRead = (_, _) => new V1PodStatus { Phase = "Failed", ContainerStatuses = [new V1ContainerStatus { Name = "metadata", State = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 2, Reason = "Error" } } }] };
        using var provisioner = Provisioner(api);

        var error = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartMetadataAsync(new MetadataServerRequest(0, 0, 3), CancellationToken.None));

        Assert.Equal("metadata pod pocket-metadata-plane-0 failed: pocket exited with code 2: Error", error.Message);
        Assert.Empty(api.Pods);
    }

    [Fact]
    public async Task RequestsOutsideThePlaneAreRefusedBeforeAnythingIsSent()
    {
        await using var api = await FakeApiServer.StartAsync();
        using var provisioner = Provisioner(api);

        Assert.Contains("port 7000, not 7001", (await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartMetadataAsync(new MetadataServerRequest(7001, 0, 3), CancellationToken.None))).Message, StringComparison.Ordinal);
        Assert.Contains("outside the plane of 3", (await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartMetadataAsync(new MetadataServerRequest(0, 3, 4), CancellationToken.None))).Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ArgumentException>(() => provisioner.StopMetadataAsync(new ProvisionedMetadata("pocket-storage-dram-abcdefgh", Address(0)), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => provisioner.StopMetadataAsync(new ProvisionedMetadata("pocket-metadata-plane-3", Address(0)), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => provisioner.StopMetadataAsync(new ProvisionedMetadata("pocket-metadata-plane-01", Address(0)), CancellationToken.None));
        Assert.Empty(api.Requests);
    }
}
