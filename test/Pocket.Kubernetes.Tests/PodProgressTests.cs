using k8s.Models;

namespace Pocket.Kubernetes.Tests;

/// <summary>Reading a starting pod's status: what counts as ready, failed, or worth waiting for.</summary>
public sealed class PodProgressTests
{
    private static V1Pod Pod(V1PodStatus status) => new() { Metadata = new V1ObjectMeta { Name = "p" }, Status = status };

    private static V1PodStatus Waiting(string reason, string message) => new()
    {
        Phase = "Pending",
        ContainerStatuses =
        [
            new V1ContainerStatus
            {
                Name = "storage",
                Image = "pocket",
                ImageID = string.Empty,
                Ready = false,
                RestartCount = 0,
                State = new V1ContainerState { Waiting = new V1ContainerStateWaiting { Reason = reason, Message = message } },
            },
        ],
    };

    [Fact]
    public void ARunningReadyPodWithAnIpIsReadyAtItsPort()
    {
        var progress = PodProgress.Of(Pod(FakeApiServer.RunningAndReady("10.1.2.3")), 7100);
        Assert.Equal(new PodProgress(PodOutcome.Ready, "10.1.2.3:7100"), progress);
    }

    [Fact]
    public void AnUnschedulablePodWaitsWithTheSchedulersMessage()
    {
        var progress = PodProgress.Of(Pod(FakeApiServer.Pending("0/3 nodes are available: 3 Insufficient memory.")), 7100);
        Assert.Equal(PodOutcome.Waiting, progress.Outcome);
        Assert.Contains("Insufficient memory", progress.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void AMissingSecretOrAPullBackOffMayClearSoItWaits()
    {
        var secret = PodProgress.Of(Pod(Waiting("CreateContainerConfigError", "secret \"pocket-cluster-token\" not found")), 7100);
        Assert.Equal(PodOutcome.Waiting, secret.Outcome);
        Assert.Contains("pocket-cluster-token", secret.Detail, StringComparison.Ordinal);
        Assert.Equal(PodOutcome.Waiting, PodProgress.Of(Pod(Waiting("ImagePullBackOff", "Back-off pulling image")), 7100).Outcome);
    }

    [Fact]
    public void AnInvalidImageNameFailsAtOnce()
    {
        var progress = PodProgress.Of(Pod(Waiting("InvalidImageName", "couldn't parse image reference \"Pocket:latest\"")), 7100);
        Assert.Equal(PodOutcome.Failed, progress.Outcome);
    }

    [Fact]
    public void RunningButNotReadyWaits()
    {
        var status = new V1PodStatus { Phase = "Running", PodIP = "10.1.2.3", Conditions = [new V1PodCondition { Type = "Ready", Status = "False" }] };
        Assert.Equal(PodOutcome.Waiting, PodProgress.Of(Pod(status), 7100).Outcome);
    }

    [Fact]
    public void AFinishedPodHasFailedEvenWithExitCodeZero()
    {
        Assert.Equal(PodOutcome.Failed, PodProgress.Of(Pod(new V1PodStatus { Phase = "Succeeded" }), 7100).Outcome);
        var evicted = PodProgress.Of(Pod(new V1PodStatus { Phase = "Failed", Reason = "Evicted", Message = "The node was low on resource: memory." }), 7100);
        Assert.Equal(PodOutcome.Failed, evicted.Outcome);
        Assert.Contains("low on resource", evicted.Detail, StringComparison.Ordinal);
    }
}
