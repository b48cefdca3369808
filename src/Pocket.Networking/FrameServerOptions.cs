using System.Net;
using System.Security.Cryptography.X509Certificates;
using Pocket.Protocol;

namespace Pocket.Networking;

/// <summary>Listener settings shared by every binary-protocol role.</summary>
public sealed record FrameServerOptions
{
    /// <summary>Where to listen; port 0 picks a free port (see <see cref="FrameServer.EndPoint"/>).</summary>
    public IPEndPoint EndPoint { get; init; } = new(IPAddress.Loopback, 0);

    public ProtocolLimits Limits { get; init; } = ProtocolLimits.Default;

    /// <summary>
    /// Connections beyond this are closed at once. Zero (the default) takes it from the process's open-file limit,
    /// which the server raises to its hard limit at start (logged in one line).
    /// </summary>
    public int MaxConnections { get; init; }

    /// <summary>Connects the kernel queues before they are accepted (a connect storm); the kernel caps it at net.core.somaxconn.</summary>
    public int ListenBacklog { get; init; } = 4096;

    /// <summary>
    /// Event-loop threads serving the connections (plain and TLS); zero means one per core, at least two (see
    /// <see cref="AutomaticEventLoops"/>).
    /// </summary>
    public int EventLoops { get; init; }

    /// <summary>Threads for handlers that block on device I/O (started on demand).</summary>
    public int IoThreads { get; init; } = 8;

    /// <summary>
    /// Replies a connection may have waiting for its peer to read them. Long before this the server stops reading the
    /// connection's requests (at <see cref="ReplyPauseBytes"/>) until the peer reads, so a client that asks for more
    /// than it reads at once is served at its own pace; a connection past this bound anyway (one reply larger than the
    /// room above the pause) is closed, with a log line.
    /// </summary>
    public int MaxReplyBacklog { get; init; } = 16 << 20;

    /// <summary>
    /// Replies waiting for the peer past which a connection's next request is not handled (nor read) until the peer
    /// has read some (at most half of <see cref="MaxReplyBacklog"/>). The kernel's socket buffers hold megabytes more on
    /// their way, so a reader at full speed never finds the server paused for want of replies queued; a stalled one
    /// costs the server this, one reply more and its kernel buffers.
    /// </summary>
    public int ReplyPauseBytes { get; init; } = 1 << 20;

    /// <summary>
    /// A connection whose peer reads none of the replies waiting for it for this long is closed, with a log line: the
    /// server stopped reading its requests (see <see cref="MaxReplyBacklog"/>), and without this a peer that never
    /// reads would hold its buffers for good. Zero or <see cref="Timeout.InfiniteTimeSpan"/> disables the check (the
    /// idle timeout, when set, still closes it).
    /// </summary>
    public TimeSpan ReplyStallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Request bytes all connections together may hold in receive buffers grown past the standard size (bodies over
    /// <see cref="FrameContext.InlineBody"/>, after their admission); a request that would pass it is refused.
    /// </summary>
    public long MaxBufferedRequestBytes { get; init; } = 256L << 20;

    /// <summary>When set, every connection is wrapped in TLS with this certificate.</summary>
    public X509Certificate2? Certificate { get; init; }

    /// <summary>
    /// A connection whose peer sends nothing for this long while the server waits for it (for its next request,
    /// or for the rest of one it stopped sending) is closed. A connection with a request in progress (a handler
    /// at work, a body arriving, a reply going out as the peer reads it) is never idle. Zero or <see cref="Timeout.InfiniteTimeSpan"/>
    /// disables the check.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The clock of the idle check and of the refused-connect log lines (the listener's own: a role's <c>TimeProvider</c> does not reach it).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// Wraps the role's handler once, when the server is made (e.g. to count and time requests for metrics). The
    /// wrapper runs on the connection's thread, inside the request, so it must be cheap and must not throw.
    /// </summary>
    public Func<IFrameHandler, IFrameHandler>? WrapHandler { get; init; }

    /// <summary>
    /// How long <see cref="FrameServer.Dispose"/> waits for the event loops and the I/O pool to leave the handlers they
    /// are running. A handler held longer (a slow device, a debugger pause) keeps its connection and its buffers: its
    /// socket is shut at once, so the peer sees the close, and the thread closes the connection when the handler
    /// returns (<see cref="FrameServer.Stopped"/> completes then). <see cref="Timeout.InfiniteTimeSpan"/> waits for good.
    /// </summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(5);

    internal bool ClosesIdle => IdleTimeout > TimeSpan.Zero;

    internal bool ClosesStalled => ReplyStallTimeout > TimeSpan.Zero;

    /// <summary>
    /// The loop count when none is set: one per core, and never one. A single loop that the scheduler preempted when its
    /// reply's send woke the client, or woke late, is not back in epoll_wait when the next request comes, and nothing
    /// else takes it; a second loop asleep there does. On two loaded cores one metadata loop had 0.5-0.7x the ops/s of
    /// two at one connection and a p99 of 1.6-3.2 ms against 0.2-0.6 ms, though 1.3-1.7x the ops/s at 64 and 256
    /// connections; quiet, it never beat two (0.67-1.00x at 1, 64 and 256; docs/benchmarks.md, "One event loop or two"
    /// and "..., quiet").
    /// </summary>
    internal static int AutomaticEventLoops => Math.Max(2, Environment.ProcessorCount);

    internal int LoopCount => EventLoops > 0 ? EventLoops : AutomaticEventLoops;

    public void Validate()
    {
        if (MaxConnections < 0 || ListenBacklog <= 0 || EventLoops < 0 || IoThreads <= 0 || MaxReplyBacklog <= 0 || ReplyPauseBytes <= 0 || MaxBufferedRequestBytes <= 0)
        {
            throw new ArgumentException("listener limits must be positive (max connections and event loops may be 0 for automatic)");
        }

        if (IdleTimeout < TimeSpan.Zero && IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException($"idle timeout {IdleTimeout} is negative (zero or infinite disables it)");
        }

        if (ReplyStallTimeout < TimeSpan.Zero && ReplyStallTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException($"reply stall timeout {ReplyStallTimeout} is negative (zero or infinite disables it)");
        }

        if (StopTimeout < TimeSpan.Zero && StopTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException($"stop timeout {StopTimeout} is negative (zero waits for nothing, infinite for good)");
        }
    }
}
