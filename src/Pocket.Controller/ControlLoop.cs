using Microsoft.Extensions.Logging;
using Pocket.Controller.Jobs;
using Pocket.Controller.Observability;
using Pocket.Controller.Scaling;

namespace Pocket.Controller;

/// <summary>
/// What the controller does after each telemetry sample, in this order: jobs forget nodes that are gone (so nothing
/// plans onto them), the warm pool replaces idle nodes that died, dead nodes of a tier below its minimum are replaced, the autoscaler decides (it starts its action in the
/// background), the metadata plane reads its servers' load and scales (<see cref="MetadataScaler"/>), then the meter reads every job's usage (one round trip each, which the autoscaler should not wait
/// for), and last the metrics take the tick's figures. A step that fails is logged and the next steps still run.
/// </summary>
internal sealed class ControlLoop(JobRegistry registry, WarmPool? pool, NodeReplacer? replacer, Autoscaler? autoscaler, JobUsageMeter meter, ControllerMetrics metrics, ILogger logger, MetadataScaler? metadataScaler = null)
{
    /// <param name="samples">Every node as the metadata plane lists it now.</param>
    /// <param name="listedBefore">Whether an earlier sample listed a node (so one missing now has gone).</param>
    /// <param name="cancellationToken">Ends with the telemetry.</param>
    public async Task TickAsync(IReadOnlyList<NodeSample> samples, Func<uint, bool> listedBefore, CancellationToken cancellationToken)
    {
        await StepAsync(() => registry.PruneAsync(samples, cancellationToken, listedBefore)).ConfigureAwait(false);
        if (pool is not null)
        {
            await StepAsync(() => pool.OnSampleAsync(samples, cancellationToken, listedBefore)).ConfigureAwait(false);
        }

        if (replacer is not null)
        {
            await StepAsync(() => replacer.OnSampleAsync(samples, cancellationToken)).ConfigureAwait(false);
        }

        if (autoscaler is not null)
        {
            await StepAsync(() => autoscaler.OnSampleAsync(samples, cancellationToken)).ConfigureAwait(false);
        }

        if (metadataScaler is not null)
        {
            await StepAsync(() => metadataScaler.OnSampleAsync(samples, cancellationToken)).ConfigureAwait(false);
        }

        await StepAsync(() => meter.TickAsync(cancellationToken)).ConfigureAwait(false);
        await StepAsync(() => metrics.OnSampleAsync(samples, cancellationToken)).ConfigureAwait(false);
    }

    private async Task StepAsync(Func<Task> step)
    {
        try
        {
            await step().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // One step's failure must not stop the telemetry or the steps after it.
            ControllerLog.TelemetryFailed(logger, ex.Message);
        }
    }
}
