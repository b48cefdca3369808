using System.Globalization;
using k8s.Models;

namespace Pocket.Kubernetes;

internal enum PodOutcome
{
    Waiting,
    Ready,
    Failed,
}

/// <summary>Where a starting storage pod stands, read from its status: ready (with its address), failed (why), or still waiting (for what).</summary>
internal readonly record struct PodProgress(PodOutcome Outcome, string Detail)
{
    // Waiting reasons that no amount of waiting fixes; the rest (image pull back-off, a Secret not yet made) may clear.
    private static readonly HashSet<string> Fatal = ["InvalidImageName", "ErrImageNeverPull"];

    public static PodProgress Of(V1Pod pod, int port)
    {
        var status = pod.Status;
        var phase = status?.Phase ?? "Pending";
        var container = status?.ContainerStatuses?.FirstOrDefault(c => c.Name == StoragePodSpec.ContainerName) ?? status?.ContainerStatuses?.FirstOrDefault();

        if (phase is "Failed" or "Succeeded")
        {
            // With restartPolicy Never a node that exits, even cleanly, is gone for good.
            if (container?.State?.Terminated is { } terminated)
            {
                return new(PodOutcome.Failed, string.Create(
                    CultureInfo.InvariantCulture,
                    $"pocket exited with code {terminated.ExitCode}{Words(terminated.Reason)}{Words(terminated.Message)}"));
            }

            return new(PodOutcome.Failed, $"phase {phase}{Words(status?.Reason)}{Words(status?.Message)}");
        }

        if (pod.Metadata?.DeletionTimestamp is not null)
        {
            return new(PodOutcome.Failed, "the pod is being deleted");
        }

        if (container?.State?.Waiting is { Reason: { } reason } waiting)
        {
            return new(Fatal.Contains(reason) ? PodOutcome.Failed : PodOutcome.Waiting, $"{reason}{Words(waiting.Message)}");
        }

        var conditions = status?.Conditions ?? [];
        if (conditions.FirstOrDefault(c => c.Type == "PodScheduled") is { Status: "False" } unscheduled)
        {
            // "0/3 nodes are available: 3 Insufficient memory." is the message an operator needs when a DRAM node is too big.
            return new(PodOutcome.Waiting, $"not scheduled{Words(unscheduled.Reason)}{Words(unscheduled.Message)}");
        }

        var ready = conditions.Any(c => c.Type == "Ready" && c.Status == "True");
        if (phase == "Running" && ready && !string.IsNullOrEmpty(status?.PodIP))
        {
            return new(PodOutcome.Ready, Address(status.PodIP, port));
        }

        return new(PodOutcome.Waiting, phase == "Running" ? "running, not ready yet (the node is not listening)" : $"phase {phase}");
    }

    /// <summary>host:port as the node advertises it (it is started with --host $(POD_IP)).</summary>
    public static string Address(string podIp, int port) => string.Create(CultureInfo.InvariantCulture, $"{podIp}:{port}");

    private static string Words(string? text) => string.IsNullOrWhiteSpace(text) ? string.Empty : $": {text.Trim()}";
}
