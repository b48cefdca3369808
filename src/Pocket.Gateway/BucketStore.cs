using System.Text.Json;
using Microsoft.Extensions.Logging;
using Pocket.Client;
using Pocket.Protocol;

namespace Pocket.Gateway;

/// <summary>
/// A bucket as the gateway remembers it: the job behind it, the job's token and the metadata server holding the job
/// (null: the gateway's own, as recorded before there were several).
/// </summary>
internal sealed record BucketEntry(string Name, string JobId, string Token, DateTimeOffset Created, string Owner, string? Metadata = null);

/// <summary>A known bucket with its open job handle.</summary>
internal sealed record Bucket(BucketEntry Entry, PocketJob Job)
{
    public string Name => Entry.Name;
}

/// <summary>
/// The bucket to (job id, token) map. Pocket hands a job's token out once, at registration, so this map is the only
/// way back to a bucket's data: it is kept in memory and, with a state directory, in <c>buckets.json</c> (written
/// whole to a temporary file and renamed, so a crash leaves the old or the new map, never half of one).
/// </summary>
internal sealed class BucketStore
{
    public const string FileName = "buckets.json";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    private readonly Dictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly HashSet<string> _creating = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _saveLock = new(1, 1);
    private readonly MetadataConnections _metadata;
    private readonly string? _path;
    private readonly ILogger _logger;

    public BucketStore(MetadataConnections metadata, string? stateDirectory, ILogger logger)
    {
        _metadata = metadata;
        _path = stateDirectory is null ? null : Path.Combine(stateDirectory, FileName);
        _logger = logger;
    }

    public IReadOnlyList<Bucket> All
    {
        get
        {
            lock (_lock)
            {
                return [.. _buckets.Values.OrderBy(b => b.Name, StringComparer.Ordinal)];
            }
        }
    }

    public Bucket? Find(string name)
    {
        lock (_lock)
        {
            return _buckets.GetValueOrDefault(name);
        }
    }

    public Bucket? FindByJobId(string jobId)
    {
        lock (_lock)
        {
            return _buckets.Values.FirstOrDefault(b => b.Entry.JobId == jobId);
        }
    }

    /// <summary>Claims a name for a CreateBucket in progress; null when free, else the existing bucket's owner (or "" while another create runs).</summary>
    public string? TryReserve(string name)
    {
        lock (_lock)
        {
            if (_buckets.TryGetValue(name, out var existing))
            {
                return existing.Entry.Owner;
            }

            return _creating.Add(name) ? null : string.Empty;
        }
    }

    public void Unreserve(string name)
    {
        lock (_lock)
        {
            _creating.Remove(name);
        }
    }

    public async Task<Bucket> AddAsync(BucketEntry entry)
    {
        var bucket = await OpenAsync(entry, CancellationToken.None).ConfigureAwait(false);
        lock (_lock)
        {
            _creating.Remove(entry.Name);
            _buckets[entry.Name] = bucket;
        }

        await SaveAsync().ConfigureAwait(false);
        return bucket;
    }

    /// <summary>Forgets a bucket (deleted, or its job is gone).</summary>
    public async Task RemoveAsync(string name)
    {
        bool removed;
        lock (_lock)
        {
            removed = _buckets.Remove(name);
        }

        if (removed)
        {
            await SaveAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Reads <c>buckets.json</c> and keeps the buckets whose jobs still answer to their tokens.</summary>
    public async Task LoadAsync(CancellationToken cancellationToken)
    {
        if (_path is null || !File.Exists(_path))
        {
            return;
        }

        List<BucketEntry>? entries;
        var stream = File.OpenRead(_path);
        await using (stream.ConfigureAwait(false))
        {
            entries = await JsonSerializer.DeserializeAsync<List<BucketEntry>>(stream, Json, cancellationToken).ConfigureAwait(false);
        }

        var dropped = 0;
        foreach (var entry in entries ?? [])
        {
            if (!JobToken.TryParse(entry.Token, out _))
            {
                dropped++;
                continue;
            }

            // A bucket whose server cannot be reached fails the start, as the gateway's own server does: dropping it
            // would lose its token, the only way back to its data.
            var bucket = await OpenAsync(entry, cancellationToken).ConfigureAwait(false);
            try
            {
                await bucket.Job.GetUsageAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PocketUnauthorizedException)
            {
                // The job ended while the gateway was down (deregistered, or its lease ran out).
                GatewayLog.BucketGone(_logger, entry.Name, entry.JobId);
                dropped++;
                continue;
            }

            lock (_lock)
            {
                _buckets[entry.Name] = bucket;
            }
        }

        GatewayLog.StateLoaded(_logger, _path, _buckets.Count, dropped);
        if (dropped > 0)
        {
            await SaveAsync().ConfigureAwait(false);
        }
    }

    private async Task<Bucket> OpenAsync(BucketEntry entry, CancellationToken cancellationToken)
    {
        if (!JobToken.TryParse(entry.Token, out var token))
        {
            throw new InvalidOperationException($"bucket {entry.Name} has a malformed job token");
        }

        PocketClient client;
        try
        {
            client = await _metadata.ForAsync(entry.Metadata, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is PocketException or IOException or System.Net.Sockets.SocketException)
        {
            throw new InvalidOperationException($"bucket {entry.Name}: its metadata server {entry.Metadata} cannot be reached: {ex.Message}", ex);
        }

        return new Bucket(entry, client.OpenJob(entry.JobId, token));
    }

    // Never cancelled: the map has changed already, and the file must follow it.
    private async Task SaveAsync()
    {
        if (_path is null)
        {
            return;
        }

        await _saveLock.WaitAsync().ConfigureAwait(false);
        try
        {
            List<BucketEntry> entries;
            lock (_lock)
            {
                entries = [.. _buckets.Values.Select(b => b.Entry).OrderBy(e => e.Name, StringComparer.Ordinal)];
            }

            Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
            var temporary = _path + ".tmp";
            var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                // The file holds job tokens: whoever reads it can read every bucket.
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            var stream = new FileStream(temporary, options);
            await using (stream.ConfigureAwait(false))
            {
                await JsonSerializer.SerializeAsync(stream, entries, Json).ConfigureAwait(false);
            }

            File.Move(temporary, _path, overwrite: true);
        }
        finally
        {
            _saveLock.Release();
        }
    }
}
