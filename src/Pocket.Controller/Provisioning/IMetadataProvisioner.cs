namespace Pocket.Controller.Provisioning;

/// <summary>What the controller asks for when it starts a metadata server.</summary>
/// <param name="Port">Port to listen on; 0: any free one. A replacement asks for the port of the server it replaces, so
/// storage nodes and the lost jobs' clients find it where they look.</param>
/// <param name="Offset">Its place among the metadata servers: its jobs are numbered <paramref name="Offset"/> + 1, then every
/// <paramref name="Stride"/>-th number, so job ids stay unique across the plane.</param>
/// <param name="Stride">How many metadata servers share the job numbers.</param>
public sealed record MetadataServerRequest(int Port, int Offset = 0, int Stride = 1)
{
    /// <summary>The jobs lost with the server this one replaces: it answers their tokens <c>JobLost</c>.</summary>
    public IReadOnlyList<LostJobLine> LostJobs { get; init; } = [];

    /// <summary>The id only: the lost jobs' tokens stay out of logs.</summary>
    public override string ToString() => $"metadata server on port {Port} ({LostJobs.Count} lost jobs)";
}

/// <summary>A metadata server a provisioner started.</summary>
/// <param name="Handle">The provisioner's own name for it (process id), for stopping it.</param>
/// <param name="Address">host:port it serves on.</param>
public sealed record ProvisionedMetadata(string Handle, string Address)
{
    /// <summary>Where it serves its Prometheus metrics, when started with a metrics listener.</summary>
    public Uri? MetricsUrl { get; init; }
}

/// <summary>
/// How the controller gets a metadata server: as a local child process (<see cref="LocalProcessProvisioner"/>) or a
/// Kubernetes pod at a stable DNS name (Pocket.Kubernetes), so that one that dies can be replaced at its address and the
/// plane can grow and shrink. A provisioner that does not implement this (in-process) leaves a lost metadata server
/// unreplaced: its jobs are still reported lost. Any server it started may be stopped, not only the last one: the
/// metadata-plane scaler drains the least loaded.
/// </summary>
public interface IMetadataProvisioner
{
    /// <summary>Starts a metadata server and returns once it listens. Throws <see cref="ProvisioningException"/> when it cannot.</summary>
    Task<ProvisionedMetadata> StartMetadataAsync(MetadataServerRequest request, CancellationToken cancellationToken);

    /// <summary>Stops a metadata server this provisioner started (its jobs are gone with it).</summary>
    Task StopMetadataAsync(ProvisionedMetadata server, CancellationToken cancellationToken);
}
