namespace Pocket.LoadGenerator;

/// <summary>
/// A target that times its ops elsewhere (each client's own connection, or worker processes) and does everything
/// untimed (writing the objects to read, deleting, reading the servers' CPU) through the system's shared target:
/// the base of <see cref="FanInBenchTarget"/> and <see cref="WorkerFleet"/>.
/// </summary>
internal abstract class DelegatingBenchTarget(IBenchTarget shared) : IBenchTarget
{
    /// <summary>The system's own target, one client shared by the untimed work.</summary>
    protected IBenchTarget Shared { get; } = shared;

    public string Name => Shared.Name;

    public string? CpuScope => Shared.CpuScope;

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken) => Shared.PutAsync(key, value, cancellationToken);

    public ValueTask<int> GetAsync(string key, Memory<byte> destination, CancellationToken cancellationToken) => Shared.GetAsync(key, destination, cancellationToken);

    public Task DeleteAsync(string prefix, IReadOnlyList<string> keys, long size, CancellationToken cancellationToken) => Shared.DeleteAsync(prefix, keys, size, cancellationToken);

    public Task<double?> CpuSecondsAsync(CancellationToken cancellationToken) => Shared.CpuSecondsAsync(cancellationToken);

    public ValueTask<bool> ExistsAsync(string key, CancellationToken cancellationToken) => Shared.ExistsAsync(key, cancellationToken);

    public ValueTask DeleteOneAsync(string key, CancellationToken cancellationToken) => Shared.DeleteOneAsync(key, cancellationToken);

    public Task CreateListedAsync(string prefix, int count, CancellationToken cancellationToken) => Shared.CreateListedAsync(prefix, count, cancellationToken);

    public ValueTask<int> ListAsync(string prefix, int limit, CancellationToken cancellationToken) => Shared.ListAsync(prefix, limit, cancellationToken);

    public ValueTask<long> CountAsync(string prefix, CancellationToken cancellationToken) => Shared.CountAsync(prefix, cancellationToken);

    public Task DropListedAsync(string prefix, int count, CancellationToken cancellationToken) => Shared.DropListedAsync(prefix, count, cancellationToken);

    /// <summary>
    /// Declared here rather than left to the interface's default, so that a subclass's own one is what the interface
    /// calls (a default interface method is not overridden by a derived class's method of the same name).
    /// </summary>
    public virtual IBenchTarget ForClient(int client) => this;

    public abstract ValueTask DisposeAsync();
}
