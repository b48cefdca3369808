using Pocket.Metrics;
using Pocket.Networking;
using Prometheus;

namespace Pocket.Observability.Tests;

public sealed class FrameMetricsTests
{
    /// <summary>
    /// The metrics decorator sits between a server and its role's handler. Every member of the handler interface must
    /// reach the role: a member left to the interface's default would silently change the server (admission would be
    /// skipped and bodies buffered unchecked, direct writes into node memory lost).
    /// </summary>
    [Fact]
    public void TheDecoratorForwardsEveryHandlerMember()
    {
        var wrapped = new FrameMetrics("storage", Prometheus.Metrics.NewCustomRegistry()).Wrap(new NothingHandler());
        var map = wrapped.GetType().GetInterfaceMap(typeof(IFrameHandler));
        Assert.NotEmpty(map.InterfaceMethods);
        Assert.All(map.TargetMethods, method => Assert.Equal(wrapped.GetType(), method.DeclaringType));
    }

    private sealed class NothingHandler : IFrameHandler
    {
        public void Handle(FrameContext frame)
        {
        }

        public void OnDisconnected(FrameContext connection)
        {
        }
    }
}
