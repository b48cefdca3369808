using Pocket.Client;

namespace Pocket.LoadGenerator.Sort;

/// <summary>
/// Where the stages of a serverless job hand data to each other: whole objects by key, written once, read by a later
/// stage. The sort needs nothing more, so the same sort runs on Pocket, and (later) on Redis or a local directory
/// for comparison.
/// </summary>
internal interface IShuffleStore
{
    /// <summary>What the store is, for reports ("pocket job sort-1").</summary>
    string Description { get; }

    ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken);
}

/// <summary>A Pocket job as a shuffle store.</summary>
internal sealed class PocketShuffleStore(PocketJob job) : IShuffleStore
{
    public string Description => $"pocket job {job.Id}";

    public ValueTask PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        job.PutAsync(key, data, PutFlags.None, cancellationToken);

    public ValueTask<byte[]> GetAsync(string key, CancellationToken cancellationToken) =>
        job.GetAsync(key, GetFlags.None, cancellationToken);
}
