using System.Globalization;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>What a storage child is told: everything <c>pocket storage</c> needs to start and register.</summary>
/// <param name="MetadataAddress">The metadata server it registers with, host:port.</param>
/// <param name="Tier">The tier it serves.</param>
/// <param name="CapacityBytes">Its capacity.</param>
public sealed record StorageRoleArguments(string MetadataAddress, NodeTier Tier, long CapacityBytes)
{
    /// <summary>Stop when standard input closes, so a child never outlives its parent.</summary>
    public bool StopOnStdinEof { get; init; }

    /// <summary>Address to listen on and advertise (the role's default, loopback, when null).</summary>
    public string? Host { get; init; }

    /// <summary>Port to listen on (the role's default, any free port, when null).</summary>
    public int? Port { get; init; }

    /// <summary>Block size (the tier's default when null).</summary>
    public int? BlockSize { get; init; }

    /// <summary>A dram node's headroom of free memory faulted in ahead of writes (the role's default when null).</summary>
    public long? DramHeadroom { get; init; }

    /// <summary>Idle timeout of its connections (the role's default when null).</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>Event-loop threads serving its connections (the role's default when null).</summary>
    public int? EventLoops { get; init; }

    /// <summary>Where an ssd or hdd node keeps its file; ignored for dram, which keeps nothing on disk.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Log at Information level.</summary>
    public bool Verbose { get; init; }

    /// <summary>Register as a warm-pool node.</summary>
    public bool Standby { get; init; }

    /// <summary>TLS files for the node's listener and its connection to the metadata server; null: plain TCP.</summary>
    public NodeTlsFiles? Tls { get; init; }

    /// <summary>Port of its Prometheus metrics listener (0 = any free port); null: no metrics (and no per-request metering).</summary>
    public int? MetricsPort { get; init; }
}

/// <summary>What a metadata child is told: everything <c>pocket metadata</c> needs to start.</summary>
/// <param name="Host">Address to listen on and to be reached at.</param>
/// <param name="Port">Port to listen on (0 = any free port; a replacement takes the port of the server it replaces).</param>
public sealed record MetadataRoleArguments(string Host, int Port)
{
    /// <summary>Stop when standard input closes, so a child never outlives its parent.</summary>
    public bool StopOnStdinEof { get; init; }

    /// <summary>Port of its Prometheus metrics listener (0 = any free port); null: none.</summary>
    public int? MetricsPort { get; init; }

    /// <summary>Idle timeout of its connections (the role's default when null).</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>Event-loop threads serving its connections (the role's default when null).</summary>
    public int? EventLoops { get; init; }

    /// <summary>Its bound on object memory (the role's default when null).</summary>
    public long? MaxObjectMemory { get; init; }

    /// <summary>Its bound on inline bytes (the role's default when null: a quarter of the object memory, at most 256 MiB).</summary>
    public long? InlineCapacity { get; init; }

    /// <summary>This server's place among the metadata servers (job ids "name-N" stay unique across them): offset and stride.</summary>
    public (int Offset, int Stride)? JobNumbers { get; init; }

    /// <summary>A file of the jobs lost with the server this one replaces (<see cref="RoleCommandLine.WriteLostJobs"/>); null: none.</summary>
    public string? LostJobsFile { get; init; }

    /// <summary>TLS files: its listener's certificate and key, and the trust and name for its connections to storage nodes; null: plain TCP.</summary>
    public NodeTlsFiles? Tls { get; init; }

    /// <summary>Log at Information level.</summary>
    public bool Verbose { get; init; }
}

/// <summary>A job lost with its metadata server, as the controller hands it to the replacement (a line of the lost-jobs file).</summary>
/// <param name="Token">The job's token.</param>
/// <param name="JobId">Its id.</param>
/// <param name="LostAt">When the server was declared lost.</param>
public sealed record LostJobLine(JobToken Token, string JobId, DateTimeOffset LostAt)
{
    /// <summary>The id only: a record's generated text would print the token.</summary>
    public override string ToString() => $"lost job {JobId}";
}

/// <summary>
/// The launch contract of the child roles: the arguments each is started with and the one line each prints once it
/// serves. The local and Kubernetes provisioners, the benchmark cluster and the roles themselves
/// (<c>pocket metadata</c>, <c>pocket storage</c>, <c>pocket controller</c>) all use it, so the two sides cannot drift.
/// </summary>
public static class RoleCommandLine
{
    /// <summary>The argument that makes a role stop when its standard input closes.</summary>
    public const string StopOnStdinEofArgument = "--stop-on-stdin-eof";

    /// <summary>Start of the line a storage node prints once registered: <c>POCKET-NODE id=N address=HOST:PORT</c>.</summary>
    public const string StorageReadyPrefix = "POCKET-NODE ";

    /// <summary>Start of the line a metadata server prints once listening: <c>POCKET-METADATA address=HOST:PORT[ tls]</c>.</summary>
    public const string MetadataReadyPrefix = "POCKET-METADATA address=";

    /// <summary>Start of the line a controller prints once listening: <c>POCKET-CONTROLLER url=URL</c>.</summary>
    public const string ControllerReadyPrefix = "POCKET-CONTROLLER url=";

    /// <summary>The arguments of <c>pocket storage</c> (after the executable and any arguments that run it).</summary>
    public static List<string> Storage(StorageRoleArguments role)
    {
        List<string> arguments = ["storage"];
        if (role.StopOnStdinEof)
        {
            arguments.Add(StopOnStdinEofArgument);
        }

        arguments.AddRange(
        [
            "--metadata", role.MetadataAddress,
            "--tier", role.Tier.Name(),
            "--capacity", role.CapacityBytes.ToString(CultureInfo.InvariantCulture),
        ]);
        if (role.Host is { } host)
        {
            arguments.AddRange(["--host", host]);
        }

        if (role.Port is { } port)
        {
            arguments.AddRange(["--port", port.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.BlockSize is { } blockSize)
        {
            arguments.AddRange(["--block-size", blockSize.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.DramHeadroom is { } headroom && role.Tier == NodeTier.Dram)
        {
            arguments.AddRange(["--dram-headroom", headroom.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.IdleTimeout is { } idleTimeout)
        {
            arguments.AddRange(["--idle-timeout", idleTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture) + "s"]);
        }

        if (role.EventLoops is { } loops)
        {
            arguments.AddRange(["--event-loops", loops.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.Tier != NodeTier.Dram && role.DataDirectory is { } directory)
        {
            arguments.AddRange(["--data-dir", directory]);
        }

        if (role.Verbose)
        {
            arguments.Add("--verbose");
        }

        if (role.MetricsPort is { } metricsPort)
        {
            arguments.AddRange(["--metrics-port", metricsPort.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.Standby)
        {
            arguments.Add("--standby");
        }

        AddTls(arguments, role.Tls);
        return arguments;
    }

    /// <summary>
    /// The arguments of <c>pocket metadata</c> listening on <paramref name="host"/>:<paramref name="port"/>, with its
    /// metrics listener on <paramref name="metricsPort"/> when given (0 = any free port).
    /// </summary>
    public static List<string> Metadata(string host, int port, bool stopOnStdinEof, int? metricsPort = null)
    {
        List<string> arguments = ["metadata", "--host", host, "--port", port.ToString(CultureInfo.InvariantCulture)];
        if (stopOnStdinEof)
        {
            arguments.Add(StopOnStdinEofArgument);
        }

        if (metricsPort is { } metrics)
        {
            arguments.AddRange(["--metrics-port", metrics.ToString(CultureInfo.InvariantCulture)]);
        }

        return arguments;
    }

    /// <summary>The arguments of <c>pocket metadata</c> (after the executable and any arguments that run it).</summary>
    public static List<string> Metadata(MetadataRoleArguments role)
    {
        var arguments = Metadata(role.Host, role.Port, role.StopOnStdinEof, role.MetricsPort);
        if (role.IdleTimeout is { } idleTimeout)
        {
            arguments.AddRange(["--idle-timeout", idleTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture) + "s"]);
        }

        if (role.EventLoops is { } loops)
        {
            arguments.AddRange(["--event-loops", loops.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.MaxObjectMemory is { } memory)
        {
            arguments.AddRange(["--max-object-memory", memory.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.InlineCapacity is { } inline)
        {
            arguments.AddRange(["--inline-capacity", inline.ToString(CultureInfo.InvariantCulture)]);
        }

        if (role.JobNumbers is { } numbers)
        {
            arguments.AddRange(["--job-numbers", string.Create(CultureInfo.InvariantCulture, $"{numbers.Offset}/{numbers.Stride}")]);
        }

        if (role.LostJobsFile is { } lost)
        {
            arguments.AddRange(["--lost-jobs", lost]);
        }

        if (role.Verbose)
        {
            arguments.Add("--verbose");
        }

        AddTls(arguments, role.Tls);
        return arguments;
    }

    /// <summary>
    /// Writes the lost-jobs file of a replacement metadata server: one job a line, <c>TOKEN JOB-ID LOST-AT</c> (the time
    /// in ISO 8601). It holds tokens, so it is created readable by its owner only.
    /// </summary>
    public static void WriteLostJobs(string path, IEnumerable<LostJobLine> jobs)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var writer = new StreamWriter(path, System.Text.Encoding.UTF8, options);
        writer.Write(LostJobsText(jobs));
    }

    /// <summary>The text of a lost-jobs file (<see cref="WriteLostJobs"/>), e.g. for a Kubernetes Secret that a replacement pod mounts.</summary>
    public static string LostJobsText(IEnumerable<LostJobLine> jobs)
    {
        var text = new System.Text.StringBuilder();
        foreach (var job in jobs)
        {
            text.Append(job.Token.ToString()).Append(' ').Append(job.JobId).Append(' ')
                .Append(job.LostAt.UtcDateTime.ToString("O", CultureInfo.InvariantCulture)).Append('\n');
        }

        return text.ToString();
    }

    /// <summary>Reads a lost-jobs file (<see cref="WriteLostJobs"/>); throws <see cref="FormatException"/> naming the first bad line.</summary>
    public static List<LostJobLine> ReadLostJobs(string path)
    {
        var jobs = new List<LostJobLine>();
        var number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 3
                || !JobToken.TryParse(parts[0], out var token)
                || !DateTimeOffset.TryParse(parts[2], CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var lostAt))
            {
                throw new FormatException($"{path}, line {number}: expected TOKEN JOB-ID LOST-AT");
            }

            jobs.Add(new LostJobLine(token, parts[1], lostAt));
        }

        return jobs;
    }

    /// <summary>
    /// The line a storage node prints once registered; with <paramref name="metrics"/> (its metrics URL) the line ends in
    /// <c> metrics=URL</c>, so whoever started it can list where to scrape it.
    /// </summary>
    public static string StorageReadyLine(uint nodeId, string address, Uri? metrics = null) =>
        string.Create(CultureInfo.InvariantCulture, $"{StorageReadyPrefix}id={nodeId} address={address}{MetricsPart(metrics)}");

    /// <summary>The metrics URL a ready line (of a storage node or a metadata server) names, or null when it names none.</summary>
    public static Uri? MetricsUrl(string line)
    {
        foreach (var part in line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.StartsWith(MetricsMarker, StringComparison.Ordinal)
                && Uri.TryCreate(part[MetricsMarker.Length..], UriKind.Absolute, out var url)
                && (url.Scheme == Uri.UriSchemeHttp || url.Scheme == Uri.UriSchemeHttps))
            {
                return url;
            }
        }

        return null;
    }

    private const string MetricsMarker = "metrics=";

    private static string MetricsPart(Uri? metrics) => metrics is null ? string.Empty : $" {MetricsMarker}{metrics}";

    /// <summary>Reads a storage node's ready line; false when it lacks the id or the address.</summary>
    public static bool TryParseStorageReady(string line, out uint nodeId, out string address)
    {
        nodeId = 0;
        address = string.Empty;
        if (!line.StartsWith(StorageReadyPrefix, StringComparison.Ordinal))
        {
            return false;
        }

        foreach (var part in line[StorageReadyPrefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.StartsWith("id=", StringComparison.Ordinal))
            {
                _ = uint.TryParse(part.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out nodeId);
            }
            else if (part.StartsWith("address=", StringComparison.Ordinal))
            {
                address = part[8..];
            }
        }

        return nodeId != 0 && address.Length > 0;
    }

    /// <summary>The line a metadata server prints once listening (with <c> metrics=URL</c> when it serves metrics).</summary>
    public static string MetadataReadyLine(string address, bool tls, Uri? metrics = null) =>
        $"{MetadataReadyPrefix}{address}{(tls ? " tls" : string.Empty)}{MetricsPart(metrics)}";

    /// <summary>Reads a metadata server's ready line: its address, without the TLS marker.</summary>
    public static bool TryParseMetadataReady(string line, out string address)
    {
        address = string.Empty;
        if (!line.StartsWith(MetadataReadyPrefix, StringComparison.Ordinal))
        {
            return false;
        }

        var rest = line[MetadataReadyPrefix.Length..].Trim();
        var space = rest.IndexOf(' ', StringComparison.Ordinal);
        address = space < 0 ? rest : rest[..space];
        return address.Length > 0;
    }

    /// <summary>The line a controller prints once listening.</summary>
    public static string ControllerReadyLine(Uri url) => $"{ControllerReadyPrefix}{url}";

    /// <summary>The certificate options every role child takes alike (storage and metadata).</summary>
    private static void AddTls(List<string> arguments, NodeTlsFiles? tls)
    {
        if (tls is null)
        {
            return;
        }

        arguments.AddRange(["--tls-cert", tls.CertificatePath]);
        if (tls.KeyPath is { } key)
        {
            arguments.AddRange(["--tls-key", key]);
        }

        arguments.AddRange(tls.TrustPath is { } trust ? ["--tls-ca", trust] : ["--tls"]);
        if (tls.ServerName is { } name)
        {
            arguments.AddRange(["--tls-name", name]);
        }
    }
}
