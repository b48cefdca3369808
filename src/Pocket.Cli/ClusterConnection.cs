using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Cli;

/// <summary>
/// Which metadata server a client verb talks to: --metadata, else $POCKET_METADATA, else (for a job's data) the
/// address the job was registered with, else the cluster.json that `pocket up` wrote. The cluster token (needed
/// to register and deregister jobs directly, and for every controller call) comes from $POCKET_CLUSTER_TOKEN, else
/// cluster.json.
/// </summary>
internal sealed record ClusterConnection(string Metadata, JobToken ClusterToken, string Source)
{
    public const string MetadataVariable = "POCKET_METADATA";
    public const string TokenVariable = "POCKET_CLUSTER_TOKEN";

    /// <summary>The cluster to use, or null when none is configured (no option, variable or state file).</summary>
    public static ClusterConnection? TryResolve(string? metadataOption, PocketHome home, JobEntry? job = null)
    {
        var state = home.ReadCluster();
        var token = ResolveToken(home, state);
        if (!string.IsNullOrWhiteSpace(metadataOption))
        {
            return new ClusterConnection(metadataOption.Trim(), token, "--metadata");
        }

        var fromEnvironment = Environment.GetEnvironmentVariable(MetadataVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return new ClusterConnection(fromEnvironment.Trim(), token, MetadataVariable);
        }

        // A job registered through a controller knows its metadata server, so its data verbs need no cluster.json.
        if (job is { Metadata: { Length: > 0 } jobMetadata })
        {
            return new ClusterConnection(jobMetadata, token, $"{home.JobsFile} (job {job.Id})");
        }

        return state is null ? null : new ClusterConnection(state.Metadata, token, home.ClusterFile);
    }

    /// <summary>The cluster token: $POCKET_CLUSTER_TOKEN, else cluster.json's, else none.</summary>
    public static JobToken ResolveToken(PocketHome home, ClusterState? state = null)
    {
        var tokenText = Environment.GetEnvironmentVariable(TokenVariable);
        if (!string.IsNullOrWhiteSpace(tokenText))
        {
            return JobToken.TryParse(tokenText.Trim(), out var token)
                ? token
                : throw new CliException($"{TokenVariable} is not a token (32 hex digits)");
        }

        state ??= home.ReadCluster();
        if (state is null)
        {
            return JobToken.None;
        }

        return JobToken.TryParse(state.ClusterToken, out var stored)
            ? stored
            : throw new CliException($"{home.ClusterFile} holds a bad cluster token; delete it if no cluster is running");
    }

    public static ClusterConnection Resolve(string? metadataOption, PocketHome home, JobEntry? job = null) =>
        TryResolve(metadataOption, home, job) ?? throw new CliException("no cluster: start one with `pocket up` (or pass --metadata HOST:PORT)");

    public Task<PocketClient> ConnectAsync(CancellationToken cancellationToken, int? smallObjectThreshold = null) =>
        ConnectAsync(ClientOptions(smallObjectThreshold), cancellationToken);

    /// <summary>
    /// Connects clients with options resolved once: for callers that open many (the bench's --connections), since
    /// resolving reads cluster.json and, with TLS, the trust file (measured by `pocket bench cold`, 1 KiB, two runs each:
    /// a fresh client's connect took 249-353 us at p50 with the options resolved per client, 160-182 us resolved once).
    /// </summary>
    public Func<CancellationToken, Task<PocketClient>> Connector(int? smallObjectThreshold = null)
    {
        var options = ClientOptions(smallObjectThreshold);
        return ct => ConnectAsync(options, ct);
    }

    private PocketClientOptions ClientOptions(int? smallObjectThreshold)
    {
        var colon = Metadata.LastIndexOf(':');
        var options = ClientTls.Apply(new PocketClientOptions(), PocketHome.Default(), colon > 0 ? Metadata[..colon] : Metadata);
        return smallObjectThreshold is { } threshold ? options with { SmallObjectThreshold = threshold } : options;
    }

    private async Task<PocketClient> ConnectAsync(PocketClientOptions options, CancellationToken cancellationToken)
    {
        try
        {
            return await PocketClient.ConnectAsync(Metadata, options, cancellationToken).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            throw new CliException($"bad metadata address '{Metadata}' (from {Source}): expected HOST:PORT", ex);
        }
        catch (IOException ex)
        {
            var hint = Source.EndsWith("cluster.json", StringComparison.Ordinal)
                ? $"; is `pocket up` still running? (delete {Source} if not)"
                : Source.Contains("jobs.json", StringComparison.Ordinal)
                    ? "; the cluster the job was registered on may be gone (`pocket job rm ID` forgets it)"
                    : string.Empty;
            throw new CliException($"cannot reach the metadata server at {Metadata} (from {Source}): {ex.Message}{hint}", ex);
        }
    }
}
