using System.Globalization;
using Pocket.Protocol;

namespace Pocket.Metadata;

/// <summary>A job that ended: its id, when, and why, as the party that ended it said.</summary>
/// <param name="Status">What a request with its token is answered: <see cref="Status.Unauthorized"/> for a job that
/// ended, <see cref="Status.JobLost"/> for one whose metadata server was lost.</param>
internal sealed record JobTombstone(string JobId, DateTimeOffset EndedAt, string Why, Status Status = Status.Unauthorized);

/// <summary>
/// A job whose metadata server was lost (killed, crashed): its replacement is started with these, so a request that
/// still carries the token is answered <see cref="Status.JobLost"/> with what happened, not "unknown job token".
/// </summary>
/// <param name="Token">The lost job's token.</param>
/// <param name="JobId">Its id.</param>
/// <param name="LostAt">When the controller declared its metadata server lost.</param>
public sealed record LostJob(JobToken Token, string JobId, DateTimeOffset LostAt);

/// <summary>
/// The last jobs that ended, by token, so a request that still carries an ended job's token is told what happened
/// ("job sort-3's lease expired at ...") instead of "unknown job token". Bounded both ways: at most
/// <see cref="Capacity"/> entries and none older than <see cref="Retention"/>, the oldest dropped first, so memory
/// stays a few MiB however many jobs come and go. Not thread-safe: the state calls it under its lock.
/// </summary>
internal sealed class JobTombstones(TimeProvider time, int capacity, TimeSpan retention)
{
    private readonly Dictionary<JobToken, JobTombstone> _byToken = [];
    private readonly Queue<(JobToken Token, JobTombstone Tombstone)> _order = new();

    public int Capacity => capacity;

    public TimeSpan Retention => retention;

    public int Count => _byToken.Count;

    /// <summary>
    /// Remembers that the job behind <paramref name="token"/> ended now. <paramref name="why"/> is a clause that follows
    /// "job ID has ended: " (the controller says "its lease expired at ..."); null: it was deregistered.
    /// </summary>
    public void Add(JobToken token, string jobId, string? why)
    {
        if (capacity == 0)
        {
            return;
        }

        var now = time.GetUtcNow();
        var tombstone = new JobTombstone(jobId, now, string.IsNullOrWhiteSpace(why) ? $"it was deregistered at {Time(now)} and its data freed" : why.Trim());
        _byToken[token] = tombstone;
        _order.Enqueue((token, tombstone));
        Prune(now);
    }

    /// <summary>
    /// Remembers that the job behind <paramref name="lost"/>'s token was lost with its metadata server: requests with
    /// its token are answered <see cref="Status.JobLost"/>, saying when and that its data is gone.
    /// </summary>
    public void AddLost(LostJob lost)
    {
        if (capacity == 0)
        {
            return;
        }

        var tombstone = new JobTombstone(
            lost.JobId,
            lost.LostAt,
            $"its metadata server was lost at {Time(lost.LostAt)}; its objects are gone: register the job again",
            Status.JobLost);
        _byToken[lost.Token] = tombstone;
        _order.Enqueue((lost.Token, tombstone));
        Prune(time.GetUtcNow());
    }

    /// <summary>The tombstone of an ended job's token, or null (never a job, or ended too long ago).</summary>
    public JobTombstone? Find(JobToken token)
    {
        Prune(time.GetUtcNow());
        return _byToken.GetValueOrDefault(token);
    }

    /// <summary>What a request with this token is told: what happened to its job, or that the token names none.</summary>
    public string UnknownTokenMessage(JobToken token) => UnknownToken(token).Message;

    /// <summary>The status and message a request with this token gets: JobLost or Unauthorized, saying what happened.</summary>
    public (Status Status, string Message) UnknownToken(JobToken token) =>
        Find(token) switch
        {
            { Status: Status.JobLost } lost => (Status.JobLost, $"job {lost.JobId} was lost: {lost.Why}"),
            { } tombstone => (Status.Unauthorized, $"job {tombstone.JobId} has ended: {tombstone.Why}"),
            null => (Status.Unauthorized, "unknown job token"),
        };

    /// <summary>A time as the messages print it: UTC to the second, ISO 8601.</summary>
    public static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

    private void Prune(DateTimeOffset now)
    {
        while (_order.TryPeek(out var oldest) && (_order.Count > capacity || now - oldest.Tombstone.EndedAt > retention))
        {
            _order.Dequeue();

            // A token is never reused by a new job, but the same entry may be re-added; drop only the one queued here.
            if (_byToken.TryGetValue(oldest.Token, out var current) && ReferenceEquals(current, oldest.Tombstone))
            {
                _byToken.Remove(oldest.Token);
            }
        }
    }
}
