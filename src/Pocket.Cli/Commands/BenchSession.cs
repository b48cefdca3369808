using Pocket.Admin;
using Pocket.Client;
using Pocket.Protocol;
using Spectre.Console;

namespace Pocket.Cli.Commands;

/// <summary>
/// What `pocket bench` and `pocket bench sort` run Pocket in: the cluster named by --metadata (or the environment, or
/// `pocket up`'s), else one the bench starts for itself; a client; and a job: the one given with --job (the bench
/// writes under a prefix of its own, removes it afterwards and keeps the job's lease renewed meanwhile), else one it
/// registers and deregisters. Disposing undoes all of it, in order: job, client, cluster.
/// </summary>
internal sealed class BenchSession : IAsyncDisposable
{
    private readonly BenchCluster? _cluster;
    private readonly LeaseKeeper? _lease;

    private BenchSession(BenchCluster? cluster, PocketClient client, PocketJob job, string root, bool jobGiven, string where, string cpuScope, Func<double?> cpuSeconds, LeaseKeeper? lease)
    {
        _cluster = cluster;
        Client = client;
        Job = job;
        Root = root;
        JobGiven = jobGiven;
        Where = where;
        CpuScope = cpuScope;
        CpuSeconds = cpuSeconds;
        _lease = lease;
    }

    public PocketClient Client { get; }

    /// <summary>Administration over <see cref="Client"/>'s connection with the cluster token (none when the cluster has none or it is not known).</summary>
    public required PocketAdminClient Admin { get; init; }

    /// <summary>Opens another client to the same cluster, with the same options (one per bench client with --connections).</summary>
    public required Func<CancellationToken, Task<PocketClient>> ConnectAnother { get; init; }

    public PocketJob Job { get; }

    /// <summary>The metadata server's address (what a worker process of --processes connects to).</summary>
    public required string MetadataAddress { get; init; }

    /// <summary>The prefix everything the bench writes goes under: empty in a job of its own.</summary>
    public string Root { get; }

    /// <summary>True when the job was given with --job rather than registered by the bench.</summary>
    public bool JobGiven { get; }

    /// <summary>Where Pocket runs, for reports (with the job and prefix when the job was given).</summary>
    public string Where { get; }

    /// <summary>The cluster the bench started, or null when it runs on an existing one.</summary>
    public BenchClusterOptions? OwnCluster => _cluster?.Options;

    /// <summary>What <see cref="CpuSeconds"/> covers, or why the servers' CPU is not measured.</summary>
    public string CpuScope { get; }

    /// <summary>Summed CPU seconds of the server processes so far; null when not measured.</summary>
    public Func<double?> CpuSeconds { get; }

    public static async Task<BenchSession> OpenAsync(string? metadata, string? jobId, BenchClusterOptions ownCluster, int? smallObjectThreshold, CancellationToken cancellationToken)
    {
        var home = PocketHome.Default();
        JobEntry? entry = null;
        JobToken jobToken = default;
        if (jobId is not null)
        {
            entry = home.ReadJobs().Find(j => j.Id == jobId)
                ?? throw new CliException($"unknown job '{jobId}': register one with `pocket job register NAME` (known jobs: `pocket job ls`)");
            if (!JobToken.TryParse(entry.Token, out jobToken))
            {
                throw new CliException($"job '{jobId}' has a bad token in {home.JobsFile}");
            }
        }

        var connection = entry is null ? ClusterConnection.TryResolve(metadata, home) : ClusterConnection.Resolve(metadata, home, entry);
        BenchCluster? cluster = null;
        PocketClient? client = null;
        try
        {
            if (connection is null)
            {
                cluster = await BenchCluster.StartAsync(ownCluster, BenchCommand.Status, cancellationToken).ConfigureAwait(false);
                connection = new ClusterConnection(cluster.MetadataAddress, cluster.ClusterToken, "own cluster");
            }

            var where = cluster?.Description ?? connection.Metadata;
            client = await connection.ConnectAsync(cancellationToken, smallObjectThreshold).ConfigureAwait(false);
            var (cpuScope, cpuSeconds) = cluster is not null
                ? (cluster.CpuScope ?? "not measured: the cluster runs in the bench process (--in-process)", cluster.ServerCpuSeconds)
                : await BenchCommand.ExistingClusterCpuAsync(client.Admin(connection.ClusterToken), connection.Metadata, cancellationToken).ConfigureAwait(false);
            if (entry is not null)
            {
                var job = client.OpenJob(entry.Id, jobToken);
                var root = $"bench-{Guid.NewGuid():N}/";
                return new BenchSession(cluster, client, job, root, jobGiven: true, $"{where}, job {entry.Id} under {root}", cpuScope, cpuSeconds, LeaseKeeper.Start(job, root, LeaseKeeper.DefaultInterval, TimeProvider.System))
                {
                    ConnectAnother = connection.Connector(smallObjectThreshold),
                    MetadataAddress = connection.Metadata,
                    Admin = client.Admin(connection.ClusterToken),
                };
            }

            var own = await RegisterAsync(client.Admin(connection.ClusterToken), ownCluster.Tier, cancellationToken).ConfigureAwait(false);
            return new BenchSession(cluster, client, own, string.Empty, jobGiven: false, where, cpuScope, cpuSeconds, null)
            {
                ConnectAnother = connection.Connector(smallObjectThreshold),
                MetadataAddress = connection.Metadata,
                Admin = client.Admin(connection.ClusterToken),
            };
        }
        catch
        {
            if (client is not null)
            {
                await client.DisposeAsync().ConfigureAwait(false);
            }

            if (cluster is not null)
            {
                await cluster.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>Stops renewing the lease, removes what the bench wrote (or its job), then closes the client and stops its own cluster.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_lease is not null)
        {
            await _lease.DisposeAsync().ConfigureAwait(false);
        }

        if (JobGiven)
        {
            await RemoveRootQuietlyAsync().ConfigureAwait(false);
        }
        else
        {
            await DeregisterQuietlyAsync().ConfigureAwait(false);
        }

        await Client.DisposeAsync().ConfigureAwait(false);
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static async Task<PocketJob> RegisterAsync(PocketAdminClient admin, NodeTier tier, CancellationToken cancellationToken)
    {
        try
        {
            return await admin.RegisterJobAsync("bench", tier, cancellationToken).ConfigureAwait(false);
        }
        catch (PocketUnauthorizedException ex)
        {
            throw new CliException($"the bench registers its own job, which needs the cluster token: set {ClusterConnection.TokenVariable} ({ex.Message})", ex);
        }
    }

    /// <summary>What the bench wrote into a job it was given: everything under its own prefix.</summary>
    private async Task RemoveRootQuietlyAsync()
    {
        try
        {
            await Job.DeleteAsync(Root, recursive: true, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException)
        {
            CommandRunner.Error.MarkupLine($"[yellow]warning:[/] could not remove {Markup.Escape(Root)} from job {Markup.Escape(Job.Id)}: {Markup.Escape(ex.Message)}");
        }
    }

    private async Task DeregisterQuietlyAsync()
    {
        try
        {
            await Admin.DeregisterJobAsync(Job.Id, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException)
        {
            // The job's lease reclaims it; the bench result matters more than a failed clean-up.
            CommandRunner.Error.MarkupLine($"[yellow]warning:[/] could not deregister bench job {Markup.Escape(Job.Id)}: {Markup.Escape(ex.Message)}");
        }
    }
}

/// <summary>
/// Keeps a job's lease alive while a bench runs in it. The controller renews a lease when the job made any request
/// since its last look (every 5 s) and reclaims the job after a whole lease (300 s by default) without one; a bench
/// can spend longer than that on other systems (--vs peers) or between runs, so this makes one cheap request (a
/// lookup of a key under the bench's prefix; whether it exists does not matter) every <see cref="DefaultInterval"/> until disposed.
/// </summary>
internal sealed class LeaseKeeper : IAsyncDisposable
{
    /// <summary>A tenth of the default lease: a few missed renewals still leave the job alive.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(30);

    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _renewals;

    private LeaseKeeper(Func<CancellationToken, Task> renew, TimeSpan interval, TimeProvider time)
    {
        // The timer starts now, not when the loop first runs: a test's fake clock may move on before that.
        _loop = RunAsync(renew, new PeriodicTimer(interval, time));
    }

    /// <summary>Requests made so far.</summary>
    public long Renewals => Interlocked.Read(ref _renewals);

    /// <summary>Raised after each renewal request has been answered (or has failed); tests await it.</summary>
    public event Action? Renewed;

    public static LeaseKeeper Start(PocketJob job, string root, TimeSpan interval, TimeProvider time) =>
        new(async ct => await job.LookupAsync(root + "lease", ct).ConfigureAwait(false), interval, time);

    private async Task RunAsync(Func<CancellationToken, Task> renew, PeriodicTimer timer)
    {
        using var _ = timer;
        await Task.Yield();
        var warned = false;
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                try
                {
                    await renew(_stop.Token).ConfigureAwait(false);
                    Interlocked.Increment(ref _renewals);
                }
                catch (Exception ex) when (ex is PocketException or IOException && !_stop.IsCancellationRequested)
                {
                    // The bench's own requests fail too if the cluster is gone; one warning is enough.
                    if (!warned)
                    {
                        warned = true;
                        CommandRunner.Error.MarkupLine($"[yellow]warning:[/] could not renew the job's lease: {Markup.Escape(ex.Message)}");
                    }
                }

                Renewed?.Invoke();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>Stops renewing; returns once no renewal is in flight.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
    }
}
