using Pocket.Protocol;

namespace Pocket.Client;

/// <summary>Settings of a <see cref="PocketClient"/>.</summary>
public sealed record PocketClientOptions
{
    /// <summary>
    /// Objects up to this size (at most the protocol's 64 KiB, the default) are put and read in one round trip through
    /// the metadata server; one the server has no room to keep inline is written through the storage nodes instead.
    /// </summary>
    public int SmallObjectThreshold { get; init; } = 64 << 10;

    /// <summary>Extent transfers in flight per object operation (striping parallelism, and the memory bound for streams).</summary>
    public int MaxParallelTransfers { get; init; } = 8;

    /// <summary>Bytes allocated per round trip when the size of a stream is not known up front.</summary>
    public long StreamAllocationBatch { get; init; } = 16L << 20;

    /// <summary>Requests in flight per connection.</summary>
    public int MaxInFlightPerConnection { get; init; } = 256;

    /// <summary>Time allowed to open a connection.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long each request (one exchange with the metadata server or a storage node) may wait for its reply before
    /// it fails with <see cref="Networking.RequestTimeoutException"/>, so an unresponsive node never hangs a caller;
    /// <see cref="Timeout.InfiniteTimeSpan"/> waits forever. A caller's own token can end any wait sooner.
    /// </summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a job's request whose metadata connection failed keeps reconnecting to learn what happened to the job:
    /// when its metadata server was lost, the controller starts a replacement at the same address within seconds, which
    /// answers <see cref="PocketJobLostException"/>. Past this wait the request fails as unreachable. Zero: fail at once.
    /// </summary>
    public TimeSpan JobLostWait { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>When set, connections use TLS and expect this server name.</summary>
    public string? TlsHost { get; init; }

    /// <summary>
    /// Check of the servers' TLS certificates; null uses the system's trust. A private CA or a self-signed cluster
    /// certificate: <c>TlsCertificates.TrustRoots(TlsCertificates.LoadTrusted(path))</c> (Pocket.Networking).
    /// </summary>
    public System.Net.Security.RemoteCertificateValidationCallback? CertificateValidation { get; init; }
}
