using System.Diagnostics;
using Pocket.Networking;
using Pocket.Protocol;
using Prometheus;

namespace Pocket.Metrics;

/// <summary>
/// Requests of a binary-protocol role, counted by opcode and reply status and timed by opcode:
/// <c>pocket_ROLE_requests_total{opcode,status}</c> and <c>pocket_ROLE_request_duration_seconds{opcode}</c>.
/// Installed as <see cref="FrameServerOptions.WrapHandler"/>, so the role's code knows nothing of it. The labelled
/// series are looked up once per opcode and status value and kept in arrays indexed by the wire number, so a request
/// costs two timestamps, one histogram observation and one counter increment, with no lookup and no allocation.
/// </summary>
public sealed class FrameMetrics
{
    /// <summary>
    /// Fixed buckets from 10 us (an inline get on a quiet machine) to 10 s (a large extent on a slow disk): fixed so
    /// that histograms of many nodes add up (server-side quantiles would not).
    /// </summary>
    public static readonly double[] LatencyBuckets =
        [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly Counter _requests;
    private readonly Histogram _duration;
    private readonly Histogram.Child?[] _durationByOpcode = new Histogram.Child?[256];
    private readonly Counter.Child?[][] _requestsByOpcode = new Counter.Child?[256][];

    /// <summary>Creates the request metrics of <paramref name="role"/> (metadata, storage) in <paramref name="registry"/>.</summary>
    public FrameMetrics(string role, CollectorRegistry registry)
    {
        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        _requests = factory.CreateCounter(
            $"pocket_{role}_requests_total",
            "Requests handled, by opcode and reply status.",
            new CounterConfiguration { LabelNames = ["opcode", "status"] });
        _duration = factory.CreateHistogram(
            $"pocket_{role}_request_duration_seconds",
            "Time from a request's header read to its reply handed to the connection, by opcode (the reply's write is not included).",
            new HistogramConfiguration { LabelNames = ["opcode"], Buckets = LatencyBuckets });
    }

    /// <summary>The decorator for <see cref="FrameServerOptions.WrapHandler"/>.</summary>
    public IFrameHandler Wrap(IFrameHandler inner) => new MeteredHandler(inner, this);

    /// <summary>Records one request that began at <paramref name="started"/> (a <see cref="Stopwatch"/> timestamp): all the decorator adds to a request.</summary>
    internal void Record(Opcode opcode, Status status, long started)
    {
        var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        var code = (byte)opcode;
        var duration = _durationByOpcode[code] ??= _duration.WithLabels(OpcodeLabel(opcode));
        duration.Observe(seconds);
        var byStatus = _requestsByOpcode[code] ??= new Counter.Child?[StatusSlots];
        var slot = (int)status < StatusSlots - 1 ? (int)status : StatusSlots - 1;
        var counter = byStatus[slot] ??= _requests.WithLabels(OpcodeLabel(opcode), StatusLabel(status));
        counter.Inc();
    }

    // Statuses beyond the known ones share the last slot (and the label "other"): the series stay bounded whatever a peer sends.
    private const int StatusSlots = 32;

    /// <summary>The label of an opcode: its name in snake case ("put_small"); numbers outside the enum are "unknown".</summary>
    public static string OpcodeLabel(Opcode opcode) =>
        Enum.IsDefined(opcode) ? SnakeCase(opcode.ToString()) : "unknown";

    /// <summary>The label of a status: its name in snake case ("not_found"); numbers outside the enum are "other".</summary>
    public static string StatusLabel(Status status) =>
        Enum.IsDefined(status) && (int)status < StatusSlots - 1 ? SnakeCase(status.ToString()) : "other";

    internal static string SnakeCase(string name)
    {
        var builder = new System.Text.StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0)
            {
                builder.Append('_');
            }

            builder.Append(char.ToLowerInvariant(name[i]));
        }

        return builder.ToString();
    }

    private sealed class MeteredHandler(IFrameHandler inner, FrameMetrics metrics) : IFrameHandler
    {
        public void Handle(FrameContext frame)
        {
            var started = Stopwatch.GetTimestamp();
            var opcode = frame.Header.Opcode;
            try
            {
                inner.Handle(frame);
            }
            finally
            {
                // A handler that threw is answered with an internal error by the server (the status Begin set).
                metrics.Record(opcode, frame.ReplyStatus, started);
            }
        }

        public void OnDisconnected(FrameContext connection) => inner.OnDisconnected(connection);

        public bool HoldsState(FrameContext connection) => inner.HoldsState(connection);

        // Admission and direct bodies must reach the role's handler: the interface's defaults would buffer unchecked
        // bodies and lose the straight-to-node-memory path.
        public int PrefixLength(in FrameHeader header) => inner.PrefixLength(header);

        public FrameAdmission Admit(FrameContext frame) => inner.Admit(frame);

        public Span<byte> BodyDestination(FrameContext frame, int received) => inner.BodyDestination(frame, received);

        public void Abandon(FrameContext frame) => inner.Abandon(frame);
    }
}
