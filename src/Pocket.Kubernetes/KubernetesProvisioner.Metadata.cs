using System.Globalization;
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Pocket.Controller.Provisioning;

namespace Pocket.Kubernetes;

/// <summary>The metadata plane: one pod per server at a stable address (<see cref="MetadataPlaneSpec"/>).</summary>
public sealed partial class KubernetesProvisioner
{
    private volatile bool _serviceMade;

    /// <summary>
    /// Where server <paramref name="index"/> of the plane this provisioner runs is reached (host:port). The controller's
    /// metadata addresses are servers 0 to <see cref="KubernetesProvisionerOptions.MaxMetadataServers"/> - 1, in order:
    /// a server's place among them is its index (<see cref="MetadataServerRequest.Offset"/>).
    /// </summary>
    public string MetadataServerAddress(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, _options.MaxMetadataServers);
        return MetadataPlaneSpec.Address(_options, index);
    }

    /// <summary>
    /// Starts metadata server <see cref="MetadataServerRequest.Offset"/> of the plane as pod <c>PLANE-N</c> (making the
    /// plane's headless Service first if it is missing) and returns once the pod is ready, with its stable address. A pod
    /// still holding that name (a dead server's: they do not restart, or one the controller gave up on) is deleted
    /// first. A replacement's lost jobs go to it in a Secret mounted as its --lost-jobs file.
    /// </summary>
    /// <exception cref="ProvisioningException">The API server refused or did not answer, or the pod failed or was not ready within <see cref="KubernetesProvisionerOptions.StartTimeout"/> (it is then deleted).</exception>
    public async Task<ProvisionedMetadata> StartMetadataAsync(MetadataServerRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Port != 0 && request.Port != _options.MetadataPort)
        {
            throw new ProvisioningException(string.Create(CultureInfo.InvariantCulture, $"metadata pods listen on port {_options.MetadataPort}, not {request.Port}"));
        }

        var index = request.Offset;
        if (index < 0 || index >= _options.MaxMetadataServers)
        {
            throw new ProvisioningException(string.Create(
                CultureInfo.InvariantCulture,
                $"metadata server {index} is outside the plane of {_options.MaxMetadataServers} servers this provisioner runs (its most metadata servers)"));
        }

        var name = MetadataPlaneSpec.PodName(_options, index);
        await EnsureServiceAsync(cancellationToken).ConfigureAwait(false);
        await RemoveLeftoverAsync(name, cancellationToken).ConfigureAwait(false);

        // An earlier replacement's Secret holds other jobs' tokens: never mounted again.
        var secretName = MetadataPlaneSpec.LostJobsSecretName(_options, index);
        await CallAsync<V1Status>($"deleting Secret {secretName}", ct => _client.CoreV1.DeleteNamespacedSecretAsync(secretName, _namespace, cancellationToken: ct), cancellationToken, missingIsFine: true).ConfigureAwait(false);
        if (request.LostJobs.Count > 0)
        {
            var secret = MetadataPlaneSpec.LostJobsSecret(_options, index, request.LostJobs);
            await CallAsync($"creating Secret {secretName} of {request.LostJobs.Count} lost jobs", ct => _client.CoreV1.CreateNamespacedSecretAsync(secret, _namespace, cancellationToken: ct), cancellationToken).ConfigureAwait(false);
        }

        var pod = MetadataPlaneSpec.Pod(_options, index, request);
        try
        {
            await CallAsync($"creating metadata pod {name}", ct => _client.CoreV1.CreateNamespacedPodAsync(pod, _namespace, cancellationToken: ct), cancellationToken).ConfigureAwait(false);
            KubernetesLog.MetadataPodCreated(_logger, name, _namespace, index, request.LostJobs.Count);
            await WaitUntilReadyAsync(name, "metadata", _options.MetadataPort, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ProvisioningException or OperationCanceledException)
        {
            // A server that will never serve must not hold its address: the next start (a retry) finds it free.
            if (ex is ProvisioningException)
            {
                KubernetesLog.PodStartFailed(_logger, name, ex.Message);
            }

            await DeleteMetadataQuietlyAsync(name, secretName).ConfigureAwait(false);
            throw;
        }

        return new ProvisionedMetadata(name, MetadataPlaneSpec.Address(_options, index));
    }

    /// <summary>Deletes a metadata server's pod (and any lost-jobs Secret it had). A pod already gone is not an error.</summary>
    /// <exception cref="ArgumentException">The handle is not a metadata pod of this plane.</exception>
    /// <exception cref="ProvisioningException">The API server refused the deletion or did not answer.</exception>
    public async Task StopMetadataAsync(ProvisionedMetadata server, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(server);
        var index = MetadataPlaneSpec.IndexOf(_options, server.Handle);
        if (index < 0)
        {
            throw new ArgumentException($"'{server.Handle}' is not a metadata pod this provisioner started", nameof(server));
        }

        var grace = (long)_options.DeleteGracePeriod.TotalSeconds;
        var deleted = await CallAsync<V1Pod>($"deleting metadata pod {server.Handle}", ct => _client.CoreV1.DeleteNamespacedPodAsync(server.Handle, _namespace, gracePeriodSeconds: (int)grace, cancellationToken: ct), cancellationToken, missingIsFine: true).ConfigureAwait(false);
        if (deleted)
        {
            KubernetesLog.MetadataPodDeleted(_logger, server.Handle, grace);
        }
        else
        {
            KubernetesLog.PodAlreadyGone(_logger, server.Handle);
        }

        var secretName = MetadataPlaneSpec.LostJobsSecretName(_options, index);
        await CallAsync<V1Status>($"deleting Secret {secretName}", ct => _client.CoreV1.DeleteNamespacedSecretAsync(secretName, _namespace, cancellationToken: ct), cancellationToken, missingIsFine: true).ConfigureAwait(false);
    }

    private async Task EnsureServiceAsync(CancellationToken cancellationToken)
    {
        if (_serviceMade)
        {
            return;
        }

        var service = MetadataPlaneSpec.Service(_options);
        try
        {
            await CallAsync($"creating the metadata plane's Service {_options.MetadataSetName}", ct => _client.CoreV1.CreateNamespacedServiceAsync(service, _namespace, cancellationToken: ct), cancellationToken).ConfigureAwait(false);
        }
        catch (ProvisioningException ex) when (ex.InnerException is HttpOperationException { Response.StatusCode: HttpStatusCode.Conflict })
        {
            // Made by an earlier controller, or by hand from deploy/kubernetes: the names are what counts.
        }

        _serviceMade = true;
    }

    /// <summary>Deletes a pod still holding the server's name, and waits until it is gone (a new pod cannot take the name before).</summary>
    private async Task RemoveLeftoverAsync(string name, CancellationToken cancellationToken)
    {
        V1Pod? leftover = null;
        await CallAsync($"reading metadata pod {name}", async ct => leftover = await _client.CoreV1.ReadNamespacedPodAsync(name, _namespace, cancellationToken: ct).ConfigureAwait(false), cancellationToken, missingIsFine: true).ConfigureAwait(false);
        if (leftover is null)
        {
            return;
        }

        KubernetesLog.MetadataPodLeftover(_logger, name, leftover.Metadata?.DeletionTimestamp is null ? $"phase {leftover.Status?.Phase ?? "unknown"}" : "being deleted");

        // Its jobs were already reported lost (or it was never the controller's): no grace for a server nobody uses.
        await CallAsync<V1Pod>($"deleting metadata pod {name}", ct => _client.CoreV1.DeleteNamespacedPodAsync(name, _namespace, gracePeriodSeconds: 0, cancellationToken: ct), cancellationToken, missingIsFine: true).ConfigureAwait(false);
        var time = _options.TimeProvider;
        var started = time.GetTimestamp();
        while (true)
        {
            var gone = true;
            await CallAsync($"reading metadata pod {name}", async ct => { await _client.CoreV1.ReadNamespacedPodAsync(name, _namespace, cancellationToken: ct).ConfigureAwait(false); gone = false; }, cancellationToken, missingIsFine: true).ConfigureAwait(false);
            if (gone)
            {
                return;
            }

            if (time.GetElapsedTime(started) >= _options.StartTimeout)
            {
                throw new ProvisioningException(string.Create(CultureInfo.InvariantCulture, $"metadata pod {name} was still there {_options.StartTimeout.TotalSeconds:0.#} s after it was deleted; no new server can start at its address until it is gone"));
            }

            await Task.Delay(_options.PollInterval, time, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task DeleteMetadataQuietlyAsync(string podName, string secretName)
    {
        // The caller's token may be the one that was cancelled; the clean-up gets its own, short, deadline.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _options.TimeProvider);
        try
        {
            await CallAsync<V1Pod>($"deleting metadata pod {podName}", ct => _client.CoreV1.DeleteNamespacedPodAsync(podName, _namespace, gracePeriodSeconds: 0, cancellationToken: ct), timeout.Token, missingIsFine: true).ConfigureAwait(false);
            await CallAsync<V1Status>($"deleting Secret {secretName}", ct => _client.CoreV1.DeleteNamespacedSecretAsync(secretName, _namespace, cancellationToken: ct), timeout.Token, missingIsFine: true).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ProvisioningException or OperationCanceledException)
        {
            KubernetesLog.MetadataCleanupFailed(_logger, ex, $"metadata pod {podName} that failed to start");
        }
    }

    /// <summary>
    /// One API call under <see cref="KubernetesProvisionerOptions.RequestTimeout"/>: a refusal, an unreachable or a silent
    /// API server each become a <see cref="ProvisioningException"/> that says what was being done. With
    /// <paramref name="missingIsFine"/> a 404 returns false instead.
    /// </summary>
    private async Task<bool> CallAsync<T>(string what, Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken, bool missingIsFine = false)
    {
        using var timeout = new CancellationTokenSource(_options.RequestTimeout, _options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            await call(linked.Token).ConfigureAwait(false);
            return true;
        }
        catch (HttpOperationException ex) when (missingIsFine && ex.Response?.StatusCode == HttpStatusCode.NotFound)
        {
            return false;
        }
        catch (HttpOperationException ex)
        {
            throw Failure(what, ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(what, ex);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ProvisioningException(string.Create(CultureInfo.InvariantCulture, $"{what}: the Kubernetes API server did not answer within {_options.RequestTimeout.TotalSeconds:0.#} s"), ex);
        }
    }

    private Task<bool> CallAsync(string what, Func<CancellationToken, Task> call, CancellationToken cancellationToken, bool missingIsFine = false) =>
        CallAsync<bool>(what, async ct => { await call(ct).ConfigureAwait(false); return true; }, cancellationToken, missingIsFine);
}
