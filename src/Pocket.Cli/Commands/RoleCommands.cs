using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Provisioning;
using Pocket.Controller.Scaling;
using Pocket.Metadata;
using Pocket.Metrics;
using Pocket.Networking;
using Pocket.Protocol;
using Pocket.Storage;
using Pocket.StorageServer;

namespace Pocket.Cli.Commands;

/// <summary>
/// The server roles on their own, for real deployments and for the child processes of `pocket up`:
/// `pocket metadata`, `pocket storage`, `pocket controller`. Each runs until Ctrl-C or SIGTERM; with
/// --stop-on-stdin-eof (how `pocket up` starts its children) also when standard input closes, so children never
/// outlive their parent.
/// </summary>
internal static class RoleCommands
{
    public static IEnumerable<Command> Create() => [Metadata(), Storage(), ControllerRole()];

    private static Option<string> HostOption(string description) => new("--host")
    {
        Description = description,
        DefaultValueFactory = _ => "127.0.0.1",
    };

    private static Option<int> PortOption(int defaultPort) => CommandRunner.PortRange(new Option<int>("--port")
    {
        Description = "Port to listen on (0 = any free port)",
        DefaultValueFactory = _ => defaultPort,
    });

    private static Option<bool> VerboseOption() => new("--verbose", "-v") { Description = "Log at Information level (to stderr)" };

    /// <summary>`--idle-timeout` of the roles that serve Pocket's binary protocol (and of `pocket up`, which passes it on).</summary>
    internal static Option<TimeSpan?> IdleTimeoutOption() =>
        CommandRunner.DurationOption("--idle-timeout", "Close a connection whose peer sends nothing for this long (default 5m; 0 = never)");

    /// <summary>`--inline-capacity` of `pocket metadata` and `pocket up`: the metadata server's bound on inline bytes.</summary>
    internal static Option<long?> InlineCapacityOption() => CommandRunner.OptionalSizeOption(
        "--inline-capacity",
        "Bytes of small objects kept inline in the metadata server; a small put with no room inline (past this, or past --max-object-memory because of its bytes) is written through storage nodes (default: a quarter of --max-object-memory, at most 256MiB; 0: none inline)",
        allowZero: true);

    /// <summary>`--metrics-port` of the binary-protocol roles: Prometheus metrics over HTTP(S) on the same address.</summary>
    internal static Option<int?> MetricsPortOption() => CommandRunner.PortRange(new Option<int?>("--metrics-port")
    {
        Description = "Serve Prometheus metrics at http://HOST:PORT/metrics, https:// with the role's certificate when it runs with TLS (0 = any free port; off when not given)",
    });

    /// <summary>The line a role prints when its metrics listener is up.</summary>
    internal const string MetricsReadyPrefix = "metrics: ";

    private static readonly Option<bool> StopOnStdinEof = new(RoleCommandLine.StopOnStdinEofArgument) { Description = "Stop when standard input closes (for child processes)" };

    private static Command Metadata()
    {
        var host = HostOption("Address to listen on");
        var port = PortOption(7070);
        var metricsPort = MetricsPortOption();
        var suspectAfter = CommandRunner.DurationOption("--suspect-after", "A storage node silent this long is suspect: no new blocks, reads of its blocks refused as unavailable until it answers (default 3s)");
        var nodeTimeout = CommandRunner.DurationOption("--node-timeout", "A storage node silent this long is dead and its blocks lost (default 30s)");
        var verbose = VerboseOption();
        var maxObjectMemory = CommandRunner.OptionalSizeOption(
            "--max-object-memory",
            "Memory for objects over all jobs (keys, 200 bytes of records per object, inline bytes); past it creates fail with QuotaExceeded, and small puts go through storage nodes while their records fit (default: half the memory the process may use, at least 64MiB)");
        maxObjectMemory.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is <= 0)
            {
                result.AddError("--max-object-memory must be positive");
            }
        });
        var inlineCapacity = InlineCapacityOption();
        var jobNumbers = new Option<string?>("--job-numbers")
        {
            Description = "This server's place among several metadata servers, OFFSET/STRIDE (its jobs are numbered OFFSET+1, then every STRIDE-th number), so job ids stay unique across them (default 0/1)",
            HelpName = "OFFSET/STRIDE",
        };
        var lostJobs = new Option<string?>("--lost-jobs")
        {
            Description = "File of the jobs lost with the metadata server this one replaces (TOKEN JOB-ID LOST-AT a line, written by the controller): their requests are answered JobLost",
            HelpName = "PATH",
        };
        var command = new Command("metadata", "Run a metadata server (the cluster token comes from $POCKET_CLUSTER_TOKEN, else one is made and printed)")
        {
            host, port, metricsPort, suspectAfter, nodeTimeout, maxObjectMemory, inlineCapacity, jobNumbers, lostJobs, verbose, StopOnStdinEof,
        };
        var listener = new ListenerArguments(command);
        var tls = new TlsArguments(command, listens: true);
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var defaults = new MetadataServerOptions();
            var suspect = parse.GetValue(suspectAfter) ?? defaults.SuspectAfter;
            var dead = parse.GetValue(nodeTimeout) ?? defaults.NodeTimeout;
            if (suspect <= TimeSpan.Zero || dead <= TimeSpan.Zero || suspect >= dead)
            {
                throw new CliException($"--suspect-after ({suspect.TotalSeconds:0.###} s) and --node-timeout ({dead.TotalSeconds:0.###} s) must be positive, and a node must become suspect before it is dead");
            }

            var (offset, stride) = ParseJobNumbers(parse.GetValue(jobNumbers));
            List<LostJob> lost;
            try
            {
                lost = parse.GetValue(lostJobs) is { } lostFile
                    ? [.. RoleCommandLine.ReadLostJobs(lostFile).Select(j => new LostJob(j.Token, j.JobId, j.LostAt))]
                    : [];
            }
            catch (Exception ex) when (ex is IOException or FormatException or UnauthorizedAccessException)
            {
                throw new CliException($"--lost-jobs: {ex.Message}");
            }

            var token = ClusterTokenFromEnvironment(out var generated);
            using var certificate = tls.Certificate(parse);
            using var loggerFactory = Logging(parse.GetValue(verbose));
            MetadataServer? server = null;
            var registry = Prometheus.Metrics.NewCustomRegistry();
            var metrics = parse.GetValue(metricsPort) is null ? null : RoleCollectors.Metadata(registry, () => server);
            server = new MetadataServer(
                new MetadataServerOptions
                {
                    ClusterToken = token,
                    Listener = listener.Options(parse, new IPEndPoint(ParseAddress(parse.GetValue(host)!), parse.GetValue(port)), certificate, metrics),
                    SuspectAfter = suspect,
                    NodeTimeout = dead,
                    MaxObjectMemory = parse.GetValue(maxObjectMemory),
                    InlineCapacity = parse.GetValue(inlineCapacity),
                    JobNumberOffset = offset,
                    JobNumberStride = stride,
                    LostJobs = lost,

                    // Drains copy blocks between storage nodes through this server.
                    StorageConnection = tls.Connection(parse, parse.GetValue(host)!),
                },
                loggerFactory);
            await server.StartAsync(ct).ConfigureAwait(false);
            await using (server.ConfigureAwait(false))
            {
                // Before the ready line, so whoever waits for it (a test, a script) also finds the metrics line.
                await using var listener = await StartMetricsAsync(parse.GetValue(metricsPort), ParseAddress(parse.GetValue(host)!), registry, token, certificate, loggerFactory, ct).ConfigureAwait(false);
                Console.Out.WriteLine(RoleCommandLine.MetadataReadyLine($"{parse.GetValue(host)}:{server.EndPoint.Port}", tls: certificate is not null, MetricsUrl(listener)));
                if (generated)
                {
                    Console.Out.WriteLine($"cluster token (give it to storage nodes and the controller as {ClusterConnection.TokenVariable}): {token}");
                }

                await WaitForStopAsync(parse.GetValue(StopOnStdinEof), ct).ConfigureAwait(false);
            }

            return 0;
        });
        return command;
    }

    /// <summary>`--job-numbers OFFSET/STRIDE`: 0/1 when not given.</summary>
    private static (int Offset, int Stride) ParseJobNumbers(string? text)
    {
        if (text is null)
        {
            return (0, 1);
        }

        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0
            || !int.TryParse(text.AsSpan(0, slash), NumberStyles.None, CultureInfo.InvariantCulture, out var offset)
            || !int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var stride)
            || stride < 1 || offset >= stride)
        {
            throw new CliException($"--job-numbers '{text}' is not OFFSET/STRIDE with 0 <= OFFSET < STRIDE");
        }

        return (offset, stride);
    }

    private static Command Storage()
    {
        var metadata = new Option<string>("--metadata") { Description = "Metadata server HOST:PORT; several, comma-separated, share this node's blocks between them", Required = true, HelpName = "HOST:PORT[,...]" };
        var tier = CommandRunner.TierOption("--tier", "Tier of this node's device");
        var capacity = CommandRunner.SizeOption("--capacity", 1L << 30, "Bytes this node stores");
        var blockSize = CommandRunner.OptionalSizeOption("--block-size", "Allocation unit (default: 64KiB for dram and ssd, 1MiB for hdd)");
        var dataDir = new Option<string?>("--data-dir") { Description = "Directory for the ssd and hdd tiers' files (default: the temp directory)" };
        var queueDepth = new Option<int?>("--queue-depth") { Description = "Concurrent I/Os the ssd or hdd device takes (default: 64 for ssd, 2 for hdd)" };
        var buffered = new Option<bool>("--buffered") { Description = "ssd: use the page cache instead of O_DIRECT" };
        queueDepth.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is < 1 or > 4096)
            {
                result.AddError("--queue-depth must be between 1 and 4096");
            }
        });
        var host = HostOption("Address to listen on and to advertise to clients");
        var port = PortOption(0);
        var metricsPort = MetricsPortOption();
        var verbose = VerboseOption();
        var standby = new Option<bool>("--standby") { Description = "Register as a warm-pool node: no blocks until the controller activates it" };
        var dramHeadroom = DramHeadroomOption();
        var releaseDelay = CommandRunner.DurationOption("--dram-release-delay", $"dram: how long memory stays free before it goes back to the OS (default {Units.FormatDuration(SpaceReclaimerOptions.DefaultDramReleaseDelay)})");

        // Mixed-version tests and benchmarks of the drain's old path (bench/drain.sh); not for deployments.
        var noCopyExtent = new Option<bool>("--no-copy-extent") { Description = "Answer CopyExtent as a node older than it does (drains then copy to this node through the metadata server)", Hidden = true };
        var command = new Command("storage", "Run a storage node that registers with a metadata server (cluster token from $POCKET_CLUSTER_TOKEN)")
        {
            metadata, tier, capacity, blockSize, dataDir, queueDepth, buffered, dramHeadroom, releaseDelay, host, port, metricsPort, verbose, standby, noCopyExtent, StopOnStdinEof,
        };
        var listener = new ListenerArguments(command);
        var tls = new TlsArguments(command, listens: true);
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            var metadataServers = parse.GetValue(metadata)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(SplitAddress).ToList();
            if (metadataServers.Count == 0)
            {
                throw new CliException("--metadata needs at least one HOST:PORT");
            }

            var (metadataHost, metadataPort) = metadataServers[0];
            using var certificate = tls.Certificate(parse);
            var metadataConnection = tls.Connection(parse, metadataHost);
            var nodeTier = parse.GetValue(tier);
            var devices = new TierDeviceOptions { Directory = parse.GetValue(dataDir) ?? BlockDevices.DefaultDirectory, SsdUnbuffered = !parse.GetValue(buffered) };
            if (parse.GetValue(queueDepth) is { } depth)
            {
                devices = devices with { SsdQueueDepth = depth, HddQueueDepth = depth };
            }

            var block = parse.GetValue(blockSize) ?? BlockDevices.DefaultBlockSize(nodeTier);
            if (block < 4096 || block > ProtocolLimits.Default.MaxDataBody || (block & (block - 1)) != 0)
            {
                throw new CliException("--block-size must be a power of two of at least 4KiB");
            }

            IBlockDevice? device = null;
            using var loggerFactory = Logging(parse.GetValue(verbose));
            var listenHost = parse.GetValue(host)!;
            var clusterToken = ClusterTokenFromEnvironment(out _, required: false);
            StorageServer.StorageServer? server = null;
            var registry = Prometheus.Metrics.NewCustomRegistry();
            var metrics = parse.GetValue(metricsPort) is null ? null : RoleCollectors.Storage(registry, () => server);
            server = new StorageServer.StorageServer(
                new StorageServerOptions
                {
                    Metadata = new DnsEndPoint(metadataHost, metadataPort),
                    OtherMetadata = [.. metadataServers.Skip(1).Select(m => new DnsEndPoint(m.Host, m.Port))],
                    MetadataConnection = metadataConnection,

                    // Drains have this node pull blocks from other storage nodes (CopyExtent).
                    PeerConnection = tls.Connection(parse, listenHost),
                    ClusterToken = clusterToken,
                    Tier = nodeTier,
                    Standby = parse.GetValue(standby),
                    CopyExtentDisabled = parse.GetValue(noCopyExtent),
                    Capacity = parse.GetValue(capacity),
                    BlockSize = (int)block,
                    AdvertisedHost = listenHost,
                    Listener = listener.Options(parse, new IPEndPoint(ParseAddress(listenHost), parse.GetValue(port)), certificate, metrics),
                    DeviceFactory = o => device = BlockDevices.Create(o.Tier, o.Capacity, devices),
                    DramHeadroom = parse.GetValue(dramHeadroom) ?? SpaceReclaimerOptions.DefaultDramHeadroom,
                    DramReleaseDelay = parse.GetValue(releaseDelay) ?? SpaceReclaimerOptions.DefaultDramReleaseDelay,
                },
                loggerFactory);
            await server.StartAsync(ct).ConfigureAwait(false);
            await using (server.ConfigureAwait(false))
            {
                Console.Out.WriteLine($"device: {device?.Description}");

                // Before the ready line, so whoever waits for it (pocket up, a test) also finds the metrics line.
                await using var listener = await StartMetricsAsync(parse.GetValue(metricsPort), ParseAddress(listenHost), registry, clusterToken, certificate, loggerFactory, ct).ConfigureAwait(false);
                Console.Out.WriteLine(RoleCommandLine.StorageReadyLine(server.NodeId, string.Create(CultureInfo.InvariantCulture, $"{listenHost}:{server.EndPoint.Port}"), MetricsUrl(listener)));
                await WaitForStopAsync(parse.GetValue(StopOnStdinEof), ct).ConfigureAwait(false);
            }

            return 0;
        });
        return command;
    }

    /// <summary>`--dram-headroom SIZE`: 0 is meaningful (no headroom), unlike the capacities.</summary>
    internal static Option<long?> DramHeadroomOption() => new("--dram-headroom")
    {
        Description = $"dram: free memory kept faulted in ahead of writes (default {Units.FormatBytes(SpaceReclaimerOptions.DefaultDramHeadroom)}; 0 = none)",
        HelpName = "SIZE",
        CustomParser = result =>
        {
            var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
            if (Units.TryParseBytes(text, out var bytes) && bytes >= 0)
            {
                return bytes;
            }

            result.AddError($"--dram-headroom: '{text}' is not a size (examples: 0 for none, 64MiB, 1GiB)");
            return null;
        },
    };

    private static Command ControllerRole()
    {
        var metadata = new Option<string?>("--metadata") { Description = "Metadata server HOST:PORT; several, comma-separated: jobs are placed on the least loaded, and nodes it starts serve them all (required, except with --provisioner kubernetes, which then runs the metadata plane as pods)", HelpName = "HOST:PORT[,...]" };
        var metadataSpare = new Option<string?>("--metadata-spare")
        {
            Description = "Where more metadata servers may be started (with --provisioner local: `pocket metadata` children on these ports): the controller starts one while the servers' CPU or request rate is above their band, drains one it started below it, and storage nodes it starts are told these addresses too",
            HelpName = "HOST:PORT[,...]",
        };
        var metadataServers = new Option<int?>("--metadata-servers") { Description = "With --provisioner kubernetes and no --metadata: metadata server pods to start, the plane's minimum (default 1)", HelpName = "N" };
        var metadataMax = new Option<int?>("--metadata-max") { Description = "With --provisioner kubernetes and no --metadata: most metadata server pods the controller may run, scaling on their band (default: --metadata-servers, the plane keeps its size)", HelpName = "N" };
        var host = HostOption("Address to listen on");
        var port = PortOption(7080);
        var provisioner = new Option<string>("--provisioner") { Description = "How to start storage nodes: local (child processes), kubernetes (pods) or none", DefaultValueFactory = _ => "local" };
        provisioner.AcceptOnlyFromAmong("local", "kubernetes", "none");
        var kubernetesImage = new Option<string?>("--kubernetes-image") { Description = "Container image of storage pods (with --provisioner kubernetes)" };
        var kubernetesSecret = new Option<string>("--kubernetes-token-secret") { Description = "Secret holding the cluster token for storage pods", DefaultValueFactory = _ => "pocket-cluster-token" };
        var kubernetesNamespace = new Option<string?>("--kubernetes-namespace") { Description = "Namespace of storage pods (default: the controller's own, or the kubeconfig's)" };
        var kubeconfig = new Option<string?>("--kubeconfig") { Description = "Kubeconfig file (default: in-cluster service account, else ~/.kube/config)" };
        var dataDir = new Option<string?>("--data-dir") { Description = "Directory for ssd and hdd nodes started locally" };
        var nodeCapacity = CommandRunner.OptionalSizeOption("--node-capacity", "Bytes of a DRAM node, for sizing and for the nodes it starts (default: the paper's 60 GB node; give the real size for local nodes)");
        var verbose = VerboseOption();
        var command = new Command("controller", "Run the controller (HTTP/JSON job API) against a metadata server (cluster token from $POCKET_CLUSTER_TOKEN, required; callers send it as Authorization: Bearer)")
        {
            metadata, metadataSpare, metadataServers, metadataMax, host, port, provisioner, kubernetesImage, kubernetesSecret, kubernetesNamespace, kubeconfig, dataDir, nodeCapacity, verbose, StopOnStdinEof,
        };
        var tls = new TlsArguments(command, listens: true);
        CommandRunner.SetAction(command, async (parse, ct) =>
        {
            // Required: the token also guards the HTTP API, and a made-up one would lock every caller out.
            var token = ClusterTokenFromEnvironment(out _, required: true);
            using var certificate = tls.Certificate(parse);
            using var loggerFactory = Logging(parse.GetValue(verbose));
            var provisionerKind = parse.GetValue(provisioner)!;
            var plane = ControllerPlane.Parse(parse.GetValue(metadata), parse.GetValue(metadataSpare), parse.GetValue(metadataServers), parse.GetValue(metadataMax), provisionerKind);
            var nodeTls = tls.NodeFiles(parse);
            var tlsToMetadata = tls.ClientOptions(parse, plane.Addresses.Count == 0 ? "localhost" : SplitAddress(plane.Addresses[0]).Host).TlsHost is not null;
            if (tlsToMetadata && plane.Spare.Count > 0)
            {
                throw new CliException("--metadata-spare starts metadata servers without TLS; with TLS the metadata plane keeps its --metadata servers");
            }

            if (provisionerKind == "kubernetes" && tlsToMetadata)
            {
                throw new CliException("--provisioner kubernetes starts storage pods without TLS; with TLS use --provisioner local or none and start each node with `pocket storage --tls-cert ... --tls-ca ...`");
            }

            LocalProcessProvisioner? local = null;
            if (provisionerKind == "local")
            {
                if (tlsToMetadata && nodeTls is null)
                {
                    throw new CliException("--provisioner local with TLS gives the storage nodes the controller's certificate: add --tls-cert (or use --provisioner none)");
                }

                var (executable, baseArguments) = LocalProcessProvisionerOptions.CurrentProgram();
                local = new LocalProcessProvisioner(
                    new LocalProcessProvisionerOptions
                    {
                        Executable = executable,
                        BaseArguments = baseArguments,

                        // Nodes are told the spare addresses too: they join a server started there within a heartbeat.
                        MetadataAddress = string.Join(',', plane.Addresses.Concat(plane.Spare)),
                        Metadata = plane.Spare.Count == 0 ? new LocalMetadataOptions() : new LocalMetadataOptions { Host = SplitAddress(plane.Spare[0]).Host },
                        ClusterToken = token,
                        DataDirectory = parse.GetValue(dataDir),

                        // With TLS to the metadata server the nodes need it too; a certificate alone serves the API only.
                        Tls = tlsToMetadata ? nodeTls : null,
                    },
                    loggerFactory);
            }

            Pocket.Kubernetes.KubernetesProvisioner? kubernetes = null;
            if (provisionerKind == "kubernetes")
            {
                var image = parse.GetValue(kubernetesImage) ?? throw new CliException("--provisioner kubernetes needs --kubernetes-image");
                try
                {
                    kubernetes = Pocket.Kubernetes.KubernetesProvisioner.Create(
                        new Pocket.Kubernetes.KubernetesProvisionerOptions
                        {
                            Image = image,

                            // Null: the provisioner runs the plane, and storage pods are told all of its servers' addresses.
                            MetadataAddress = plane.RunsPlane ? null : string.Join(',', plane.Addresses),
                            MaxMetadataServers = plane.RunsPlane ? plane.Max : Pocket.Kubernetes.KubernetesProvisionerOptions.DefaultMaxMetadataServers,
                            ClusterTokenSecretName = parse.GetValue(kubernetesSecret)!,
                            Namespace = parse.GetValue(kubernetesNamespace),
                        },
                        loggerFactory,
                        parse.GetValue(kubeconfig));
                }
                catch (Exception ex) when (ex is ArgumentException or ProvisioningException)
                {
                    throw new CliException($"kubernetes provisioner: {ex.Message}", ex);
                }
            }

            var metadataAddresses = plane.Addresses;
            IReadOnlyList<string> spare = plane.Spare;
            if (plane.RunsPlane)
            {
                // The plane's minimum, started before the controller places any job; servers N..max-1 are its spare places.
                var started = new List<string>();
                for (var i = 0; i < plane.Servers; i++)
                {
                    Console.Out.WriteLine($"starting metadata server {i + 1} of {plane.Servers} (pod {kubernetes!.MetadataServerAddress(i)})");
                    try
                    {
                        started.Add((await kubernetes.StartMetadataAsync(new MetadataServerRequest(0, i, plane.Max), ct).ConfigureAwait(false)).Address);
                    }
                    catch (ProvisioningException ex)
                    {
                        kubernetes.Dispose();
                        throw new CliException($"metadata server {i}: {ex.Message}", ex);
                    }
                }

                metadataAddresses = started;
                spare = [.. Enumerable.Range(plane.Servers, plane.Max - plane.Servers).Select(kubernetes!.MetadataServerAddress)];
            }

            var metadataAddress = metadataAddresses[0];
            var metadataClient = tls.ClientOptions(parse, SplitAddress(metadataAddress).Host);
            var registry = new JobRegistryOptions();
            if (parse.GetValue(nodeCapacity) is { } capacity)
            {
                registry = registry with
                {
                    Sizing = registry.Sizing with
                    {
                        NodeClasses = [.. registry.Sizing.NodeClasses.Select(c => c.Tier == NodeTier.Dram ? c with { CapacityBytes = capacity } : c)],
                    },
                };
            }

            var controller = new ControllerServer(
                new ControllerOptions { MetadataAddress = metadataAddress, OtherMetadataAddresses = [.. metadataAddresses.Skip(1)], MetadataScaling = spare.Count == 0 ? null : new MetadataScalingOptions { SpareAddresses = spare }, ClusterToken = token, MetadataClient = metadataClient, Listen = new IPEndPoint(ParseAddress(parse.GetValue(host)!), parse.GetValue(port)), Registry = registry, Certificate = certificate },
                (IStorageProvisioner?)local ?? kubernetes,
                loggerFactory);
            try
            {
                await controller.StartAsync(ct).ConfigureAwait(false);
                Console.Out.WriteLine(RoleCommandLine.ControllerReadyLine(controller.Url));
                await WaitForStopAsync(parse.GetValue(StopOnStdinEof), ct).ConfigureAwait(false);
            }
            finally
            {
                await controller.DisposeAsync().ConfigureAwait(false);
                if (local is not null)
                {
                    await local.DisposeAsync().ConfigureAwait(false);
                }

                kubernetes?.Dispose();
            }

            return 0;
        });
        return command;
    }

    private static async Task<MetricsListener?> StartMetricsAsync(int? port, IPAddress address, Prometheus.CollectorRegistry registry, JobToken token, X509Certificate2? certificate, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        if (port is not { } metricsPort)
        {
            return null;
        }

        Prometheus.DotNetStats.Register(registry);
        MetricsListener listener;
        try
        {
            listener = await MetricsListener.StartAsync(new IPEndPoint(address, metricsPort), registry, token, loggerFactory, certificate, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            throw new CliException($"--metrics-port {metricsPort}: {ex.Message}", ex);
        }

        Console.Out.WriteLine($"{MetricsReadyPrefix}{MetricsUrl(listener)}");
        return listener;
    }

    private static Uri? MetricsUrl(MetricsListener? listener) => listener is null ? null : new Uri(listener.Url, MetricsEndpoint.Path);

    /// <summary>Waits for Ctrl-C/SIGTERM, or, when asked, for standard input to close (the parent is gone).</summary>
    private static async Task WaitForStopAsync(bool stopOnStdinEof, CancellationToken cancellationToken)
    {
        var stopped = Task.Delay(Timeout.Infinite, cancellationToken);
        if (stopOnStdinEof)
        {
            var inputClosed = Task.Run(
                async () =>
                {
                    using var input = Console.OpenStandardInput();
                    var buffer = new byte[256];
                    while (await input.ReadAsync(buffer, CancellationToken.None).ConfigureAwait(false) > 0)
                    {
                    }
                },
                CancellationToken.None);
            await Task.WhenAny(stopped, inputClosed).ConfigureAwait(false);
            return;
        }

        try
        {
            await stopped.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static JobToken ClusterTokenFromEnvironment(out bool generated, bool required = false)
    {
        generated = false;
        var text = Environment.GetEnvironmentVariable(ClusterConnection.TokenVariable);
        if (string.IsNullOrWhiteSpace(text))
        {
            if (required)
            {
                throw new CliException($"set {ClusterConnection.TokenVariable} to the cluster token");
            }

            generated = true;
            return JobToken.NewRandom();
        }

        return JobToken.TryParse(text.Trim(), out var token) ? token : throw new CliException($"{ClusterConnection.TokenVariable} is not a token (32 hex digits)");
    }

    private static IPAddress ParseAddress(string host) =>
        host == "localhost" ? IPAddress.Loopback
        : IPAddress.TryParse(host, out var address) ? address
        : throw new CliException($"'{host}' is not an IP address to listen on");

    private static (string Host, int Port) SplitAddress(string address)
    {
        var colon = address.LastIndexOf(':');
        return colon > 0 && int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535
            ? (address[..colon], port)
            : throw new CliException($"'{address}' is not HOST:PORT");
    }

    private static ILoggerFactory Logging(bool verbose) => LoggerFactory.Create(logging => logging
        .SetMinimumLevel(verbose ? LogLevel.Information : LogLevel.Warning)
        .AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.TimestampFormat = "HH:mm:ss.fff ";
        })
        .AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace));
}
