using System.Net;
using Pocket.Client;
using Pocket.Controller.Jobs;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller;

/// <summary>Settings of the <see cref="JobRegistry"/>: sizing constants, leases and how long node starts may take.</summary>
public sealed record JobRegistryOptions
{
    /// <summary>The sizing constants and node classes.</summary>
    public SizingOptions Sizing { get; init; } = new();

    /// <summary>A job with no request for this long is reclaimed as if it had deregistered.</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The longest lease a job may ask for (<see cref="Contracts.JobHints.Lease"/>): a job that vanishes still holds its data at most this long.</summary>
    public TimeSpan MaxLeaseDuration { get; init; } = TimeSpan.FromDays(7);

    /// <summary>How often every job's request count is read from the metadata server to renew or end its lease.</summary>
    public TimeSpan LeaseCheckInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Time allowed for started nodes to register with the metadata server before registration fails.</summary>
    public TimeSpan NodeStartTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How often the metadata server's node list is read while waiting for started nodes.</summary>
    public TimeSpan NodeStartPollInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>How long an ended job is remembered, so that a request naming it is told when and why it ended.</summary>
    public TimeSpan EndedJobMemory { get; init; } = TimeSpan.FromHours(24);

    /// <summary>The most ended jobs remembered at once (<see cref="EndedJobMemory"/>); the oldest are forgotten first.</summary>
    public int EndedJobsKept { get; init; } = 10_000;

    /// <summary>The clock of leases and timeouts; tests pass a fake one.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// Whether a new job goes to the metadata server using the least CPU first (then the fewest jobs and requests).
    /// False when the servers share one process (an in-process cluster): each reports the whole process's CPU, so two
    /// readings differ only by when they were taken, and jobs and requests alone decide.
    /// </summary>
    public bool PlaceByCpu { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        Sizing.Validate();
        if (EndedJobMemory < TimeSpan.Zero || EndedJobsKept < 0)
        {
            throw new ArgumentException("ended-job memory and count must not be negative");
        }

        if (LeaseDuration <= TimeSpan.Zero)
        {
            throw new ArgumentException("lease duration must be positive");
        }

        if (MaxLeaseDuration < LeaseDuration)
        {
            throw new ArgumentException("the longest lease must be at least the default lease");
        }

        if (LeaseCheckInterval <= TimeSpan.Zero || LeaseCheckInterval > LeaseDuration)
        {
            throw new ArgumentException("lease check interval must be positive and at most the lease duration");
        }

        if (NodeStartTimeout <= TimeSpan.Zero || NodeStartPollInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("node start timeout and poll interval must be positive");
        }
    }
}

/// <summary>Settings of the <see cref="ControllerServer"/>.</summary>
public sealed record ControllerOptions
{
    /// <summary>The metadata server, host:port.</summary>
    public required string MetadataAddress { get; init; }

    /// <summary>
    /// Further metadata servers, host:port each: the controller places each new job on the least loaded of these and
    /// <see cref="MetadataAddress"/> (docs/architecture.md, "Several metadata servers"). Empty (the default): one server.
    /// </summary>
    public IReadOnlyList<string> OtherMetadataAddresses { get; init; } = [];

    /// <summary>
    /// The cluster token: the controller's admin calls to the metadata server carry it, and every HTTP request but
    /// <c>/healthz</c> and <c>/openapi/v1.json</c> must send it as <c>Authorization: Bearer &lt;token&gt;</c>. None (a
    /// cluster without a token) leaves the API open.
    /// </summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>
    /// Settings of the controller's connection to the metadata server (TLS host name and certificate check);
    /// its cluster token is <see cref="ClusterToken"/>'s.
    /// </summary>
    public PocketClientOptions MetadataClient { get; init; } = new();

    /// <summary>Where the HTTP API listens; loopback on a free port by default (see <see cref="ControllerServer.Url"/>).</summary>
    public IPEndPoint Listen { get; init; } = new(IPAddress.Loopback, 0);

    /// <summary>Job registry settings.</summary>
    public JobRegistryOptions Registry { get; init; } = new();

    /// <summary>Samples of each node kept for <c>GET /v1/cluster/history</c> (one per <see cref="TelemetryInterval"/>).</summary>
    public int HistoryLength { get; init; } = 600;

    /// <summary>Events kept for <c>GET /v1/events</c>.</summary>
    public int EventLogLength { get; init; } = 1000;

    /// <summary>How often the node list is sampled (and the autoscaler evaluated), on <see cref="JobRegistryOptions.TimeProvider"/>.</summary>
    public TimeSpan TelemetryInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How the metadata servers are watched: each is probed every second and declared lost after 3 failed probes in a
    /// row (about 3 s after a kill); its jobs then end as lost and, with a provisioner that starts metadata servers
    /// (<see cref="Provisioning.IMetadataProvisioner"/>), a replacement is started at its address.
    /// </summary>
    public MetadataLivenessOptions MetadataLiveness { get; init; } = new();

    /// <summary>
    /// Scaling of the metadata plane by its servers' CPU and job request rate (docs/controller.md, "Scaling the metadata
    /// plane"): the servers above are the minimum, and more are started at <see cref="MetadataScalingOptions.SpareAddresses"/>.
    /// Null (the default): the plane keeps its size. Needs a provisioner that starts metadata servers
    /// (<see cref="Provisioning.IMetadataProvisioner"/>).
    /// </summary>
    public MetadataScalingOptions? MetadataScaling { get; init; }

    /// <summary>Autoscaler settings; null (the default) leaves the cluster's size to job registration alone. Needs a provisioner.</summary>
    public AutoscalerOptions? Autoscaler { get; init; }

    /// <summary>Idle standby nodes kept per tier so scale-ups take one instead of starting one; null (the default): none. Needs a provisioner.</summary>
    public WarmPoolOptions? WarmPool { get; init; }

    /// <summary>
    /// Jobs that get their own series in the per-job metrics (<c>pocket_controller_job_*{job="ID"}</c>): the ones with
    /// the most GB-seconds at each scrape; the others are summed into <c>job="_other"</c>, so a cluster with thousands of
    /// short jobs still exposes a bounded number of series. 0 folds every job into <c>_other</c>.
    /// </summary>
    public int MetricsTopJobs { get; init; } = 20;

    /// <summary>
    /// Live nodes each tier keeps: a node that dies is replaced through the provisioner while its tier has fewer,
    /// whether or not the autoscaler runs (event <c>node-replacing</c>, then <c>node-replaced</c> or
    /// <c>replace-failed</c>). Empty (the default): dead nodes are not replaced. Needs a provisioner.
    /// </summary>
    public IReadOnlyDictionary<NodeTier, int> MinimumNodes { get; init; } = new Dictionary<NodeTier, int>();

    /// <summary>
    /// The HTTP API's certificate (with its private key): the API then speaks HTTPS only, so the cluster token
    /// never crosses the network in the clear. Null (the default): plain HTTP.
    /// </summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? Certificate { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (MinimumNodes.Values.Any(n => n < 0))
        {
            throw new ArgumentException("minimum nodes per tier must not be negative");
        }

        foreach (var address in OtherMetadataAddresses.Prepend(MetadataAddress))
        {
            var colon = address?.LastIndexOf(':') ?? -1;
            if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), out var port) || port is <= 0 or > 65535)
            {
                throw new ArgumentException($"metadata address '{address}' is not host:port");
            }
        }

        if (OtherMetadataAddresses.Prepend(MetadataAddress).Distinct(StringComparer.OrdinalIgnoreCase).Count() != OtherMetadataAddresses.Count + 1)
        {
            throw new ArgumentException("a metadata server is listed twice");
        }

        if (MetadataScaling is { } plane)
        {
            plane.Validate();
            var all = OtherMetadataAddresses.Prepend(MetadataAddress).Concat(plane.SpareAddresses).ToList();
            if (all.Distinct(StringComparer.OrdinalIgnoreCase).Count() != all.Count)
            {
                throw new ArgumentException("a spare metadata address is listed twice, or is a running server's");
            }
        }

        ArgumentNullException.ThrowIfNull(Listen);
        Registry.Validate();
        MetadataLiveness.Validate();
        Autoscaler?.Validate();
        WarmPool?.Validate();
        if (MetricsTopJobs < 0)
        {
            throw new ArgumentException("metrics top jobs must be >= 0");
        }

        if (HistoryLength < 1 || EventLogLength < 1 || TelemetryInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("history length, event log length and telemetry interval must be positive");
        }
    }
}
