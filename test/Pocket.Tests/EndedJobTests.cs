using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Embedded;
using Pocket.Metadata;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Tests;

/// <summary>A request that carries an ended job's token is told which job ended, when and why, within bounded memory.</summary>
public sealed class EndedJobTests
{
    private static readonly DateTimeOffset Start = DateTimeOffset.Parse("2026-01-02T03:04:05Z", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void ADeregisteredJobsTokenIsToldWhenItEndedAndAStrangersIsNot()
    {
        var time = new FakeTimeProvider(Start);
        var state = new MetadataState(new MetadataServerOptions { TimeProvider = time }, NullLogger.Instance);
        var job = state.RegisterJob("sort", JobToken.None, NodeTier.Dram).Value;
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(state.DeregisterJob(job.Id).IsOk);

        Assert.Equal("job sort-1 has ended: it was deregistered at 2026-01-02T03:05:05Z and its data freed", state.UnknownTokenMessage(job.Token));
        Assert.Equal("unknown job token", state.UnknownTokenMessage(JobToken.NewRandom()));
        var stats = state.JobStats(string.Empty, job.Token, admin: false);
        Assert.Equal(Status.Unauthorized, stats.Status);
        Assert.NotNull(stats.Message);
        Assert.Contains("job sort-1 has ended", stats.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AJobLostWithTheServerThisOneReplacesIsAnsweredJobLostAndItsIdIsNotReused()
    {
        var lostAt = Start.AddMinutes(-1);
        var lostToken = JobToken.NewRandom();
        var state = new MetadataState(
            new MetadataServerOptions
            {
                TimeProvider = new FakeTimeProvider(Start),
                JobNumberOffset = 1,
                JobNumberStride = 2,
                LostJobs = [new LostJob(lostToken, "sort-4", lostAt)],
            },
            NullLogger.Instance);

        var (status, message) = state.UnknownToken(lostToken);
        Assert.Equal(Status.JobLost, status);
        Assert.Equal("job sort-4 was lost: its metadata server was lost at 2026-01-02T03:03:05Z; its objects are gone: register the job again", message);
        var stats = state.JobStats(string.Empty, lostToken, admin: false);
        Assert.Equal(Status.JobLost, stats.Status);
        Assert.Equal(Status.JobLost, state.ListNodes(lostToken, admin: false).Status);

        // A stranger is still only unauthorized, and the next job of the name is numbered past the lost one.
        Assert.Equal(Status.Unauthorized, state.UnknownToken(JobToken.NewRandom()).Status);
        Assert.Equal("sort-6", state.RegisterJob("sort", JobToken.None, NodeTier.Dram).Value.Id);
        Assert.Equal("etl-2", state.RegisterJob("etl", JobToken.None, NodeTier.Dram).Value.Id);
    }

    [Fact]
    public void TheReasonGivenAtDeregistrationIsWhatTheTokenIsTold()
    {
        var state = new MetadataState(new MetadataServerOptions { TimeProvider = new FakeTimeProvider(Start) }, NullLogger.Instance);
        var job = state.RegisterJob("etl", JobToken.None, NodeTier.Dram).Value;
        Assert.True(state.DeregisterJob(job.Id, "its lease expired at 2026-01-02T03:09:05Z after 5 min without requests").IsOk);

        Assert.Equal("job etl-1 has ended: its lease expired at 2026-01-02T03:09:05Z after 5 min without requests", state.UnknownTokenMessage(job.Token));
    }

    [Fact]
    public void EndedJobsAreRememberedUpToACountAndForAnHourAtMost()
    {
        var time = new FakeTimeProvider(Start);
        var tombstones = new JobTombstones(time, capacity: 3, retention: TimeSpan.FromHours(1));
        var tokens = Enumerable.Range(0, 5).Select(_ => JobToken.NewRandom()).ToArray();
        for (var i = 0; i < tokens.Length; i++)
        {
            tombstones.Add(tokens[i], $"job-{i}", null);
            time.Advance(TimeSpan.FromMinutes(10));
        }

        // The two oldest made room for the last three.
        Assert.Equal(3, tombstones.Count);
        Assert.Null(tombstones.Find(tokens[0]));
        Assert.Null(tombstones.Find(tokens[1]));
        Assert.Equal("job-2", tombstones.Find(tokens[2])?.JobId);

        // job-3 ended 20 minutes ago, job-4 10 minutes ago: 45 minutes on, only job-4 is within the hour.
        time.Advance(TimeSpan.FromMinutes(45));
        Assert.Null(tombstones.Find(tokens[2]));
        Assert.Null(tombstones.Find(tokens[3]));
        Assert.Equal("job-4", tombstones.Find(tokens[4])?.JobId);
        Assert.Equal(1, tombstones.Count);
        Assert.Equal("unknown job token", tombstones.UnknownTokenMessage(tokens[0]));
    }

    [Fact]
    public void NoneRememberedWhenTurnedOff()
    {
        var tombstones = new JobTombstones(new FakeTimeProvider(Start), capacity: 0, retention: TimeSpan.FromHours(1));
        var token = JobToken.NewRandom();
        tombstones.Add(token, "job-1", null);
        Assert.Equal(0, tombstones.Count);
        Assert.Equal("unknown job token", tombstones.UnknownTokenMessage(token));
    }

    [Fact]
    public void TheDeregisterRequestCarriesAnOptionalReasonAndReadsTheOlderForm()
    {
        var body = new BodyWriter();
        DeregisterJobRequest.Write(body, "sort-1", "its lease expired");
        Assert.True(DeregisterJobRequest.TryRead(body.WrittenSpan, out var id, out var why));
        Assert.Equal(("sort-1", "its lease expired"), (id, why));

        var older = new BodyWriter();
        DeregisterJobRequest.Write(older, "sort-2");
        Assert.True(DeregisterJobRequest.TryRead(older.WrittenSpan, out id, out why));
        Assert.Equal(("sort-2", (string?)null), (id, why));

        var bad = new BodyWriter();
        DeregisterJobRequest.Write(bad, "sort-3", "why");
        Assert.False(DeregisterJobRequest.TryRead(bad.WrittenSpan[..^1], out _, out _));
    }

    [Fact]
    public async Task OverTheWireAnEndedJobsRequestsFailUnauthorizedWithTheReason()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var admin = cluster.Admin(client);
        var job = await admin.RegisterJobAsync("wire", NodeTier.Dram, null, null);
        await job.PutAsync("a", new byte[10]);
        await admin.DeregisterJobAsync(job.Id, "it was ended by a test");

        var error = await Assert.ThrowsAsync<PocketUnauthorizedException>(async () => await job.GetAsync("a"));
        Assert.Contains($"job {job.Id} has ended: it was ended by a test", error.Message, StringComparison.Ordinal);

        // The server keeps serving, and other jobs are untouched.
        var other = await admin.RegisterJobAsync("other", NodeTier.Dram, null, null);
        await other.PutAsync("b", new byte[3]);
        Assert.Equal(3, (await other.GetAsync("b")).Length);
    }
}

/// <summary>Keys under <see cref="ObjectKey.HiddenRoot"/> (the S3 gateway's records) stay out of a job's plain listing and count.</summary>
public sealed class HiddenKeyTests
{
    [Fact]
    public async Task AListingOrCountWithoutAPrefixLeavesOutHiddenKeysAndTheirPrefixShowsThem()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = 16 << 20, PreTouchMemory = false });
        await using var client = await cluster.ConnectAsync();
        var job = await cluster.Admin(client).RegisterJobAsync("hidden", NodeTier.Dram, null, null);
        var hidden = ObjectKey.HiddenRoot + "/m/a";
        foreach (var key in new[] { "a", "b/c", hidden, ObjectKey.HiddenRoot + "/m/b/c" })
        {
            await job.PutAsync(key, new byte[4]);
        }

        async Task<List<string>> ListAsync(string prefix, bool delimited)
        {
            var keys = new List<string>();
            await foreach (var entry in job.ListAsync(prefix, delimited, pageSize: 1))
            {
                keys.Add(entry.Key);
            }

            return keys;
        }

        Assert.Equal(["a", "b/c"], await ListAsync(string.Empty, delimited: false));
        Assert.Equal(["a", "b/"], await ListAsync(string.Empty, delimited: true));
        Assert.Equal(2, await job.CountAsync(string.Empty));
        Assert.Equal([hidden, ObjectKey.HiddenRoot + "/m/b/c"], await ListAsync(ObjectKey.HiddenRoot + "/", delimited: false));
        Assert.Equal(2, await job.CountAsync(ObjectKey.HiddenRoot + "/"));
        Assert.Equal(4, (await job.GetAsync(hidden)).Length);

        // A recursive delete of everything takes the hidden keys too.
        Assert.Equal(4, await job.DeleteAsync(string.Empty, recursive: true));
        Assert.Empty(await ListAsync(ObjectKey.HiddenRoot + "/", delimited: false));
    }
}
