using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;
using Pocket.Controller;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Kubernetes;

/// <summary>
/// Starts each storage node as a Kubernetes pod running `pocket storage`, through the official client: the pod
/// listens on its own IP at a fixed port and registers itself with the metadata server, as the original Pocket's
/// storage pods did. Stopping a node deletes its pod. The pod name is the node's handle. With no
/// <see cref="KubernetesProvisionerOptions.MetadataAddress"/> it runs the metadata plane too, one pod per server
/// (<see cref="StartMetadataAsync"/>).
/// </summary>
public sealed partial class KubernetesProvisioner : IStorageProvisioner, IMetadataProvisioner, IDisposable
{
    /// <summary>Label every Pocket object carries (value <c>pocket</c>).</summary>
    public const string NameLabel = "app.kubernetes.io/name";

    /// <summary>Label naming the role of a Pocket pod (value <c>storage</c> for the pods made here).</summary>
    public const string RoleLabel = "pocket.io/role";

    /// <summary>Label naming a storage pod's tier: <c>dram</c>, <c>ssd</c> or <c>hdd</c>.</summary>
    public const string TierLabel = "pocket.io/tier";

    /// <summary>Annotation holding the capacity, in bytes, a storage pod was started with.</summary>
    public const string CapacityAnnotation = "pocket.io/capacity-bytes";

    // Kubernetes' own generateName alphabet: no vowels or look-alikes, so no random suffix spells a word.
    private const string SuffixAlphabet = "bcdfghjklmnpqrstvwxz2456789";

    private readonly KubernetesProvisionerOptions _options;
    private readonly IKubernetes _client;
    private readonly bool _ownsClient;
    private readonly ILogger _logger;
    private readonly string _namespace;

    /// <summary>Makes a provisioner that talks through <paramref name="client"/>, which the caller keeps and disposes.</summary>
    /// <exception cref="ArgumentException">A setting is invalid (<see cref="KubernetesProvisionerOptions.Validate"/>).</exception>
    public KubernetesProvisioner(KubernetesProvisionerOptions options, IKubernetes client, ILoggerFactory loggerFactory)
        : this(options, client, ownsClient: false, loggerFactory)
    {
    }

    private KubernetesProvisioner(KubernetesProvisionerOptions options, IKubernetes client, bool ownsClient, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        options.Validate();
        _options = options;
        _client = client;
        _ownsClient = ownsClient;
        _namespace = options.Namespace!;
        _logger = loggerFactory.CreateLogger<KubernetesProvisioner>();
        Tiers = [.. Enum.GetValues<NodeTier>().Where(t => options.ForTier(t).Enabled)];
        KubernetesLog.Configured(_logger, _namespace, options.Image, options.MetadataAddress ?? $"the plane of {options.MaxMetadataServers} servers it runs ({options.MetadataSetName}-N)", string.Join(", ", Tiers.Select(NodeTierNames.Name)));
    }

    /// <summary>
    /// Makes a provisioner with its own client: the pod's service account when the controller runs in a cluster,
    /// else <paramref name="kubeconfigPath"/> or the default kubeconfig (KUBECONFIG, ~/.kube/config). A null
    /// <see cref="KubernetesProvisionerOptions.Namespace"/> becomes the controller's own namespace, or the
    /// kubeconfig context's, or <c>default</c>.
    /// </summary>
    /// <exception cref="ArgumentException">A setting is invalid.</exception>
    /// <exception cref="ProvisioningException">No Kubernetes configuration could be found.</exception>
    public static KubernetesProvisioner Create(KubernetesProvisionerOptions options, ILoggerFactory loggerFactory, string? kubeconfigPath = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        KubernetesClientConfiguration config;
        try
        {
            config = kubeconfigPath is null && KubernetesClientConfiguration.IsInCluster()
                ? KubernetesClientConfiguration.InClusterConfig()
                : KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfigPath);
        }
        catch (Exception ex) when (ex is k8s.Exceptions.KubeConfigException or IOException or UnauthorizedAccessException)
        {
            throw new ProvisioningException($"no Kubernetes configuration: not running in a pod, and no usable kubeconfig ({ex.Message})", ex);
        }

        var resolved = options with { Namespace = options.Namespace ?? config.Namespace ?? "default" };
        resolved.Validate();
        return new KubernetesProvisioner(resolved, new k8s.Kubernetes(config), ownsClient: true, loggerFactory);
    }

    /// <summary>The namespace storage pods are made in.</summary>
    public string Namespace => _namespace;

    /// <inheritdoc />
    public IReadOnlyCollection<NodeTier> Tiers { get; }

    /// <summary>
    /// Creates the pod of one storage node. With <see cref="KubernetesProvisionerOptions.WaitUntilReady"/> it returns
    /// once the pod is ready, with the address the node advertises; otherwise at once, with no address. Either way
    /// the node id is null: the pod registers itself with the metadata server.
    /// </summary>
    /// <exception cref="ProvisioningException">The API server refused the pod, or the pod failed or was not ready in time (it is then deleted).</exception>
    public async Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var tier = NodeTierNames.Name(request.Tier);
        if (!Tiers.Contains(request.Tier))
        {
            throw new ProvisioningException($"the Kubernetes provisioner does not start {tier} nodes (the tier is disabled)");
        }

        if (request.CapacityBytes <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(request), request.CapacityBytes, "capacity must be positive");
        }

        var name = NewPodName(request.Tier);
        var pod = StoragePodSpec.Build(_options, request, name);
        try
        {
            var created = await _client.CoreV1.CreateNamespacedPodAsync(pod, _namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
            name = created?.Metadata?.Name ?? name;
        }
        catch (HttpOperationException ex)
        {
            throw Failure($"creating storage pod {name}", ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable($"creating storage pod {name}", ex);
        }
        catch (OperationCanceledException)
        {
            // The API server may have made the pod before the answer was abandoned.
            await DeleteQuietlyAsync(name).ConfigureAwait(false);
            throw;
        }

        KubernetesLog.PodCreated(_logger, name, _namespace, tier, request.CapacityBytes);
        if (!_options.WaitUntilReady)
        {
            return new ProvisionedNode(request.Tier, name, null, null);
        }

        try
        {
            var address = await WaitUntilReadyAsync(name, cancellationToken).ConfigureAwait(false);
            return new ProvisionedNode(request.Tier, name, null, address);
        }
        catch (Exception ex)
        {
            // A pod that will never serve would hold its memory or disk reservation forever.
            if (ex is not OperationCanceledException)
            {
                KubernetesLog.PodStartFailed(_logger, name, ex.Message);
            }

            await DeleteQuietlyAsync(name).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Waits until pod <paramref name="podName"/> is running and ready, and returns the host:port its node advertises.
    /// </summary>
    /// <exception cref="ProvisioningException">The pod failed, cannot start, or was not ready within <see cref="KubernetesProvisionerOptions.StartTimeout"/>.</exception>
    public Task<string> WaitUntilReadyAsync(string podName, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(podName);
        return WaitUntilReadyAsync(podName, "storage", _options.StoragePort, cancellationToken);
    }

    private async Task<string> WaitUntilReadyAsync(string podName, string role, int port, CancellationToken cancellationToken)
    {
        var time = _options.TimeProvider;
        var started = time.GetTimestamp();
        while (true)
        {
            // The deadline is checked between reads, never by cutting one short, so a timeout always reports what
            // the last completed read said (the scheduler's message, an image pull back-off).
            V1Pod pod;
            try
            {
                pod = await _client.CoreV1.ReadNamespacedPodAsync(podName, _namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (HttpOperationException ex)
            {
                throw Failure($"reading {role} pod {podName}", ex);
            }
            catch (HttpRequestException ex)
            {
                throw Unreachable($"reading {role} pod {podName}", ex);
            }

            var state = PodProgress.Of(pod, port);
            if (state.Outcome == PodOutcome.Ready)
            {
                KubernetesLog.PodReady(_logger, role, podName, state.Detail);
                return state.Detail;
            }

            if (state.Outcome == PodOutcome.Failed)
            {
                throw new ProvisioningException($"{role} pod {podName} failed: {state.Detail}");
            }

            var remaining = _options.StartTimeout - time.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                throw new ProvisioningException(
                    string.Create(CultureInfo.InvariantCulture, $"{role} pod {podName} was not ready within {_options.StartTimeout.TotalSeconds:0.#} s; last seen: {state.Detail}"));
            }

            await Task.Delay(remaining < _options.PollInterval ? remaining : _options.PollInterval, time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Deletes the node's pod, giving it <see cref="KubernetesProvisionerOptions.DeleteGracePeriod"/> to exit. A pod already gone is not an error.</summary>
    /// <exception cref="ArgumentException">The handle is not a pod name this provisioner makes.</exception>
    /// <exception cref="ProvisioningException">The API server refused the deletion.</exception>
    public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(node);

        // Only pods named as this provisioner names them: a bad handle must never delete someone else's pod.
        if (!KubernetesNames.IsLabel(node.Handle) || !node.Handle.StartsWith(_options.PodNamePrefix + "-", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{node.Handle}' is not a storage pod this provisioner started", nameof(node));
        }

        var grace = (long)_options.DeleteGracePeriod.TotalSeconds;
        try
        {
            await _client.CoreV1.DeleteNamespacedPodAsync(node.Handle, _namespace, gracePeriodSeconds: (int)grace, cancellationToken: cancellationToken).ConfigureAwait(false);
            KubernetesLog.PodDeleted(_logger, node.Handle, grace);
        }
        catch (HttpOperationException ex) when (ex.Response?.StatusCode == HttpStatusCode.NotFound)
        {
            KubernetesLog.PodAlreadyGone(_logger, node.Handle);
        }
        catch (HttpOperationException ex)
        {
            throw Failure($"deleting storage pod {node.Handle}", ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable($"deleting storage pod {node.Handle}", ex);
        }
    }

    /// <summary>
    /// The storage pods in the namespace (those being deleted left out), e.g. for a restarted controller to find
    /// the nodes it started before. Addresses are known for pods that have an IP.
    /// </summary>
    /// <exception cref="ProvisioningException">The API server refused the list.</exception>
    public async Task<IReadOnlyList<ProvisionedNode>> ListNodesAsync(CancellationToken cancellationToken)
    {
        V1PodList pods;
        try
        {
            pods = await _client.CoreV1.ListNamespacedPodAsync(_namespace, labelSelector: StoragePodSpec.Selector, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex)
        {
            throw Failure("listing storage pods", ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable("listing storage pods", ex);
        }

        var nodes = new List<ProvisionedNode>();
        foreach (var pod in pods?.Items ?? [])
        {
            if (pod.Metadata?.Name is not { } name || pod.Metadata.DeletionTimestamp is not null
                || pod.Metadata.Labels?.TryGetValue(TierLabel, out var tierText) != true
                || !NodeTierNames.TryParse(tierText, out var tier))
            {
                continue;
            }

            var address = string.IsNullOrEmpty(pod.Status?.PodIP) ? null : PodProgress.Address(pod.Status.PodIP, _options.StoragePort);
            nodes.Add(new ProvisionedNode(tier, name, null, address));
        }

        return nodes;
    }

    private string NewPodName(NodeTier tier) =>
        $"{_options.PodNamePrefix}-{NodeTierNames.Name(tier)}-{new string(RandomNumberGenerator.GetItems<char>(SuffixAlphabet, KubernetesNames.SuffixLength))}";

    private async Task DeleteQuietlyAsync(string name)
    {
        // The caller's token may be the one that was cancelled; the clean-up gets its own, short, deadline.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _options.TimeProvider);
        try
        {
            await _client.CoreV1.DeleteNamespacedPodAsync(name, _namespace, gracePeriodSeconds: 0, cancellationToken: timeout.Token).ConfigureAwait(false);
            KubernetesLog.PodDeleted(_logger, name, 0);
        }
        catch (HttpOperationException ex) when (ex.Response?.StatusCode == HttpStatusCode.NotFound)
        {
            KubernetesLog.PodAlreadyGone(_logger, name);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or OperationCanceledException)
        {
            KubernetesLog.CleanupFailed(_logger, ex, name);
        }
    }

    /// <summary>The API server's own words (its Status message), so "forbidden" or "exceeded quota" reaches the operator as said.</summary>
    internal static ProvisioningException Failure(string what, HttpOperationException ex)
    {
        var response = ex.Response;
        var content = response?.Content;
        string? message = null;
        if (!string.IsNullOrWhiteSpace(content))
        {
            try
            {
                message = KubernetesJson.Deserialize<V1Status>(content)?.Message;
            }
            catch (JsonException)
            {
            }

            message ??= content.Length > 500 ? content[..500] + "..." : content;
        }

        message ??= ex.Message;
        var status = response is null ? "an error" : string.Create(CultureInfo.InvariantCulture, $"{(int)response.StatusCode} {response.ReasonPhrase}").TrimEnd();
        return new ProvisioningException($"{what}: the Kubernetes API server answered {status}: {message}", ex);
    }

    private static ProvisioningException Unreachable(string what, HttpRequestException ex) =>
        new($"{what}: the Kubernetes API server could not be reached: {ex.Message}", ex);

    /// <summary>Disposes the client when this provisioner made it (<see cref="Create"/>).</summary>
    public void Dispose()
    {
        if (_ownsClient)
        {
            _client.Dispose();
        }
    }
}
