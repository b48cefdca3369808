using System.Diagnostics;
using System.Globalization;
using HdrHistogram;
using Pocket.Controller.Contracts;

namespace Pocket.LoadGenerator;

internal enum BenchOp
{
    Put,
    Get,
    Mixed,

    /// <summary>Metadata only: does an existing object exist (no data moved).</summary>
    Lookup,

    /// <summary>Metadata only: create a 0-byte object, then delete it; each of the two requests is one op.</summary>
    CreateDelete,

    /// <summary>Metadata only: one page listing the 100 objects under a prefix.</summary>
    List100,

    /// <summary>Metadata only: count the 100 objects under a prefix.</summary>
    Count,
}

internal static class BenchOps
{
    /// <summary>The metadata-only operations that `--op meta` stands for, in the order they run.</summary>
    public static readonly IReadOnlyList<BenchOp> Meta = [BenchOp.Lookup, BenchOp.CreateDelete, BenchOp.List100, BenchOp.Count];

    /// <summary>The name in tables, JSON and `--op`.</summary>
    public static string Name(this BenchOp op) => op switch
    {
        BenchOp.CreateDelete => "create_delete",
        BenchOp.List100 => "list100",
        _ => op.ToString().ToLowerInvariant(),
    };

    public static bool IsMeta(this BenchOp op) => op is BenchOp.Lookup or BenchOp.CreateDelete or BenchOp.List100 or BenchOp.Count;

    public static bool ReadsData(this BenchOp op) => op is BenchOp.Get or BenchOp.Mixed;
}

/// <summary>
/// What every system gets, identically. <see cref="KeysPerRound"/> bounds the live data of a put run: clients
/// write that many unique keys each, then (untimed, with every client stopped) the round's keys are deleted,
/// so a long run neither fills Pocket's capacity nor grows Redis without end. <see cref="Rate"/> (ops/s over all
/// <see cref="Clients"/>) makes the run open-loop (<see cref="RatePacer"/>); null is the closed loop, each client
/// sending its next request as soon as its reply lands.
/// </summary>
/// <para>
/// <see cref="Slices"/> splits each system's timed run (<see cref="Duration"/>) into that many slices run in turn with
/// the other systems' (<see cref="BenchRunner.RunSlicedAsync"/>), so that systems compared in one run meet the same
/// phases of a shared machine rather than a minute each of their own.
/// </para>
internal sealed record BenchPlan(long Size, int Clients, long? Ops, TimeSpan? Duration, TimeSpan Warmup, int KeysPerRound, int PoolKeys, double? Rate = null, int Slices = 1)
{
    /// <summary>Most slices a run may be split into.</summary>
    public const int MaxSlices = 100;

    /// <summary>The shortest slice: shorter ones would be mostly the warm-up and the time clients take to start and stop.</summary>
    public static readonly TimeSpan MinSliceDuration = TimeSpan.FromMilliseconds(500);

    /// <summary>The warm-up before each slice after a system's first: its cache and connections sat idle while the others ran.</summary>
    public static readonly TimeSpan MostSliceWarmup = TimeSpan.FromMilliseconds(500);

    /// <summary>One slice's timed run (the whole <see cref="Duration"/> with one slice).</summary>
    public TimeSpan? SliceDuration => Duration / Slices;

    /// <summary>The warm-up of every slice after a system's first (its first has <see cref="Warmup"/>).</summary>
    public TimeSpan SliceWarmup => Warmup < MostSliceWarmup ? Warmup : MostSliceWarmup;
}

/// <summary>
/// What an open-loop run adds (`--rate`): the rate offered, and besides the latency from each request's scheduled time
/// (the result's own histogram), how late each request was sent after its slot (<see cref="SendLag"/>), the same for
/// the requests whose client was ready before its slot (<see cref="PacerLag"/>: the load generator's own lateness,
/// where the rest of the send lag is a reply that came back after the next slot) and the time from send to reply
/// (<see cref="Service"/>).
/// </summary>
internal sealed record PacedFigures(double OfferedOpsPerSecond, LongHistogram SendLag, LongHistogram PacerLag, LongHistogram Service)
{
    /// <summary>Below this share of the offered rate the run is reported as not keeping up.</summary>
    public const double KeptUp = 0.97;
}

/// <summary>One system running one kind of operation. CPU figures are seconds over the timed rounds only.</summary>
/// <remarks>
/// <see cref="ClientOps"/> is how many operations each client (each connection with <c>--connections</c>) completed:
/// whether every caller was served, or some starved while others ran (empty when not counted).
/// With <see cref="Paced"/> (an open-loop run) <see cref="Latency"/> counts from each request's scheduled time.
/// </remarks>
internal sealed record BenchResult(string System, BenchOp Op, long Size, long Ops, TimeSpan Elapsed, LongHistogram Latency, double? CpuSeconds, string? CpuScope, double ProcessCpuSeconds, long[] ClientOps, PacedFigures? Paced = null)
{
    /// <summary>An open-loop run that did not reach <see cref="PacedFigures.KeptUp"/> of its offered rate: its latencies mean "saturated".</summary>
    public bool BelowOffered => Paced is { } paced && OpsPerSecond < PacedFigures.KeptUp * paced.OfferedOpsPerSecond;

    public double OpsPerSecond => Ops / Math.Max(Elapsed.TotalSeconds, 1e-9);

    public double MiBPerSecond => OpsPerSecond * Size / (1 << 20);

    public long PercentileMicros(double percentile) => Ops == 0 ? 0 : Latency.GetValueAtPercentile(percentile);

    public double? CpuMicrosPerOp => CpuSeconds is { } s && Ops > 0 ? s * 1e6 / Ops : null;

    public double ProcessCpuMicrosPerOp => Ops > 0 ? ProcessCpuSeconds * 1e6 / Ops : 0;

    /// <summary>
    /// One system's slices of one op as one result: operations, time, CPU and each client's count added, histograms
    /// added (so percentiles are over every request of every slice, not averaged), and ops/s over the slices' time.
    /// </summary>
    public static BenchResult Combine(IReadOnlyList<BenchResult> slices)
    {
        var first = slices[0];
        if (slices.Count == 1)
        {
            return first;
        }

        var clientOps = new long[first.ClientOps.Length];
        foreach (var slice in slices)
        {
            for (var c = 0; c < Math.Min(clientOps.Length, slice.ClientOps.Length); c++)
            {
                clientOps[c] += slice.ClientOps[c];
            }
        }

        return first with
        {
            Ops = slices.Sum(r => r.Ops),
            Elapsed = TimeSpan.FromTicks(slices.Sum(r => r.Elapsed.Ticks)),
            Latency = PhaseLatency.Sum(slices.Select(r => r.Latency)),
            CpuSeconds = slices.All(r => r.CpuSeconds is not null) ? slices.Sum(r => r.CpuSeconds!.Value) : null,
            ProcessCpuSeconds = slices.Sum(r => r.ProcessCpuSeconds),
            ClientOps = clientOps,
            Paced = first.Paced is { } paced
                ? paced with
                {
                    SendLag = PhaseLatency.Sum(slices.Select(r => r.Paced!.SendLag)),
                    PacerLag = PhaseLatency.Sum(slices.Select(r => r.Paced!.PacerLag)),
                    Service = PhaseLatency.Sum(slices.Select(r => r.Paced!.Service)),
                }
                : null,
        };
    }
}

/// <summary>
/// Runs one operation against one system: keys for reads are written first (untimed), a warm-up runs and is
/// thrown away, then every client issues sequential operations until the op count or the time is used up.
/// </summary>
internal sealed class BenchRunner
{
    /// <summary>Existing 0-byte objects a lookup run reads, round robin.</summary>
    public const int LookupKeys = 1000;

    /// <summary>Objects under the prefix that list100 lists and count counts.</summary>
    public const int ListedKeys = 100;

    /// <summary>An hour in microseconds: no single operation of a sane run takes longer.</summary>
    internal const long HighestLatencyMicros = 3_600_000_000;

    private readonly BenchPlan _plan;
    private readonly byte[] _value;
    private readonly byte[][] _buffers;
    private readonly Action<string> _status;

    public BenchRunner(BenchPlan plan, bool needsReadBuffers, Action<string> status)
    {
        _plan = plan;
        _status = status;

        // Allocated and touched once, before any timing: first touch of fresh memory costs ~12 us per page here,
        // which would otherwise be charged to whichever system runs first.
        _value = GC.AllocateUninitializedArray<byte>(checked((int)plan.Size), pinned: true);
        Random.Shared.NextBytes(_value);
        _buffers = new byte[needsReadBuffers ? plan.Clients : 0][];
        for (var i = 0; i < _buffers.Length; i++)
        {
            _buffers[i] = GC.AllocateUninitializedArray<byte>(checked((int)plan.Size), pinned: true);
            _buffers[i].AsSpan().Fill(0xA5);
        }
    }

    /// <summary>One system, one op: what it reads written, the warm-up, the timed run (whole), and what it read removed.</summary>
    public async Task<BenchResult> RunAsync(IBenchTarget target, BenchOp op, CancellationToken cancellationToken)
    {
        var prepared = await PrepareAsync(target, op, cancellationToken).ConfigureAwait(false);
        try
        {
            return await RunSliceAsync(target, op, prepared, 0, _plan.Warmup, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await CleanupAsync(target, op, prepared).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Every system, one op, in <see cref="BenchPlan.Slices"/> slices: slice k runs each system in turn, starting
    /// with system k (so each system runs first, second, ... equally often), each system's first slice after its full
    /// warm-up and every later one after <see cref="BenchPlan.SliceWarmup"/>; returns a result per system, its slices
    /// combined (<see cref="BenchResult.Combine"/>), in the order of <paramref name="targets"/>.
    /// </summary>
    public async Task<IReadOnlyList<BenchResult>> RunSlicedAsync(IReadOnlyList<IBenchTarget> targets, BenchOp op, CancellationToken cancellationToken)
    {
        var prepared = new Prepared?[targets.Count];
        var slices = targets.Select(_ => new List<BenchResult>()).ToArray();
        try
        {
            for (var i = 0; i < targets.Count; i++)
            {
                prepared[i] = await PrepareAsync(targets[i], op, cancellationToken).ConfigureAwait(false);
            }

            for (var slice = 0; slice < _plan.Slices; slice++)
            {
                for (var turn = 0; turn < targets.Count; turn++)
                {
                    var i = (slice + turn) % targets.Count;
                    var warmup = slice == 0 ? _plan.Warmup : _plan.SliceWarmup;
                    slices[i].Add(await RunSliceAsync(targets[i], op, prepared[i]!, slice, warmup, cancellationToken).ConfigureAwait(false));
                }
            }
        }
        finally
        {
            for (var i = 0; i < targets.Count; i++)
            {
                if (prepared[i] is { } written)
                {
                    await CleanupAsync(targets[i], op, written).ConfigureAwait(false);
                }
            }
        }

        return [.. slices.Select(BenchResult.Combine)];
    }

    /// <summary>What an op's timed phases read: a pool of objects (get, mixed; lookup's 0-byte ones), or a listed prefix (list100, count).</summary>
    internal sealed record Prepared(string[] Keys, string? ListPrefix);

    /// <summary>
    /// Writes, untimed, what <paramref name="op"/> reads: keys for reads, 0-byte objects for lookups, the listed prefix
    /// for list100 and count. Whatever was written of them is removed again when writing fails.
    /// </summary>
    internal async Task<Prepared> PrepareAsync(IBenchTarget target, BenchOp op, CancellationToken cancellationToken)
    {
        var name = op.Name();
        var prepared = new Prepared(
            op switch
            {
                BenchOp.Get or BenchOp.Mixed => PoolKeys(name, _plan.PoolKeys),
                BenchOp.Lookup => PoolKeys(name, LookupKeys),
                _ => [],
            },
            op is BenchOp.List100 or BenchOp.Count ? $"{name}/listed/" : null);
        try
        {
            if (prepared.Keys.Length > 0)
            {
                // Objects to read (the bench's size), or 0-byte ones to look up.
                var value = op.IsMeta() ? ReadOnlyMemory<byte>.Empty : _value;
                _status(op.IsMeta() ? $"{target.Name} {name}: writing {LookupKeys} empty objects to look up" : $"{target.Name} {name}: writing {_plan.PoolKeys} keys to read");
                var options = new ParallelOptions { MaxDegreeOfParallelism = _plan.Clients, CancellationToken = cancellationToken };
                await Parallel.ForEachAsync(prepared.Keys, options, (key, ct) => target.PutAsync(key, value, ct)).ConfigureAwait(false);
            }

            if (prepared.ListPrefix is { } listPrefix)
            {
                _status($"{target.Name} {name}: writing {ListedKeys} empty objects under '{listPrefix}'");
                await target.CreateListedAsync(listPrefix, ListedKeys, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            await CleanupAsync(target, op, prepared).ConfigureAwait(false);
            throw;
        }

        return prepared;
    }

    /// <summary>
    /// One timed run of <paramref name="op"/> on one system (one slice of it with <see cref="BenchPlan.Slices"/>), after
    /// an untimed warm-up of <paramref name="warmup"/> (none when zero), in this process or in the fleet's.
    /// </summary>
    internal async Task<BenchResult> RunSliceAsync(IBenchTarget target, BenchOp op, Prepared prepared, int slice, TimeSpan warmup, CancellationToken cancellationToken)
    {
        var name = op.Name();
        var of = _plan.Slices > 1 ? string.Create(CultureInfo.InvariantCulture, $"slice {slice + 1} of {_plan.Slices}, ") : string.Empty;
        if (target is WorkerFleet fleet)
        {
            if (warmup > TimeSpan.Zero)
            {
                _status($"{fleet.Name} {name}: {of}warm-up {Units.FormatDuration(warmup)} in {fleet.Processes} processes");
                await fleet.RunPhaseAsync(op, prepared.Keys.Length, warmup: true, slice, warmup.TotalSeconds, cancellationToken).ConfigureAwait(false);
            }

            _status($"{fleet.Name} {name}: {of}measuring in {fleet.Processes} processes");
            var cpuBefore = await fleet.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
            var parts = await fleet.RunPhaseAsync(op, prepared.Keys.Length, warmup: false, slice, null, cancellationToken).ConfigureAwait(false);
            var cpuAfter = await fleet.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
            double? cpu = cpuBefore is { } before && cpuAfter is { } after ? after - before : null;
            return WorkerResult.Merge(fleet.Name, op, op.IsMeta() ? 0 : _plan.Size, parts, cpu, fleet.CpuScope);
        }

        if (warmup > TimeSpan.Zero)
        {
            _status($"{target.Name} {name}: {of}warm-up {Units.FormatDuration(warmup)}");
            await MeasureOnceAsync(target, op, prepared, PhasePrefix(name, warmup: true, slice), warmup: true, warmup, cancellationToken).ConfigureAwait(false);
        }

        _status($"{target.Name} {name}: {of}measuring");
        return await MeasureOnceAsync(target, op, prepared, PhasePrefix(name, warmup: false, slice), warmup: false, _plan.SliceDuration, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Removes what <see cref="PrepareAsync"/> wrote; runs even after Ctrl-C: a peer such as Redis would otherwise keep the keys.</summary>
    internal async Task CleanupAsync(IBenchTarget target, BenchOp op, Prepared prepared)
    {
        if (prepared.Keys.Length > 0)
        {
            await target.DeleteAsync($"{op.Name()}/pool/", prepared.Keys, op.IsMeta() ? 0 : _plan.Size, CancellationToken.None).ConfigureAwait(false);
        }

        if (prepared.ListPrefix is { } listPrefix)
        {
            await target.DropListedAsync(listPrefix, ListedKeys, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>A phase's own key prefix (`get/run/`, `get/warm2/` for slice 2's warm-up), so no phase meets another's keys.</summary>
    private static string PhasePrefix(string opName, bool warmup, int slice) =>
        string.Create(CultureInfo.InvariantCulture, $"{opName}/{(warmup ? "warm" : "run")}{(slice > 0 ? slice.ToString(CultureInfo.InvariantCulture) : string.Empty)}/");

    /// <summary>A warm-up (thrown away by the caller) or a timed run of <paramref name="op"/> over <paramref name="timeLimit"/>.</summary>
    private Task<BenchResult> MeasureOnceAsync(IBenchTarget target, BenchOp op, Prepared prepared, string prefix, bool warmup, TimeSpan? timeLimit, CancellationToken cancellationToken)
    {
        if (op.IsMeta())
        {
            return MeasureMetaAsync(target, op, prefix, prepared.Keys, prepared.ListPrefix ?? $"{op.Name()}/listed/", warmup ? null : _plan.Ops, timeLimit, warmup, cancellationToken);
        }

        return warmup
            ? MeasureAsync(target, op, prefix, prepared.Keys, null, timeLimit, singleRound: true, cancellationToken)
            : MeasureAsync(target, op, prefix, prepared.Keys, _plan.Ops, timeLimit, singleRound: false, cancellationToken);
    }

    private async Task<BenchResult> MeasureMetaAsync(IBenchTarget target, BenchOp op, string prefix, string[] lookup, string listPrefix, long? opsLimit, TimeSpan? timeLimit, bool warmup, CancellationToken cancellationToken)
    {
        var clients = _plan.Clients;
        using var histograms = new PhaseLatency();
        var remaining = new StrongBox(opsLimit ?? long.MaxValue);
        var cpuBefore = await target.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
        var processBefore = Environment.CpuUsage.TotalTime;
        var clock = Stopwatch.StartNew();
        var tasks = new Task<long>[clients];
        for (var c = 0; c < clients; c++)
        {
            var client = new MetaClient(c, clients, op, prefix, lookup, listPrefix, warmup, timeLimit, clock, remaining, histograms);
            var own = target.ForClient(c);
            tasks[c] = Task.Run(() => RunMetaClientAsync(own, client, cancellationToken), cancellationToken);
        }

        var counts = await Task.WhenAll(tasks).ConfigureAwait(false);
        var elapsed = clock.Elapsed;
        var processCpu = (Environment.CpuUsage.TotalTime - processBefore).TotalSeconds;
        var cpuAfter = await target.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
        double? cpu = cpuBefore is { } before && cpuAfter is { } after ? after - before : null;
        var latency = histograms.Merge();

        return new BenchResult(target.Name, op, 0, counts.Sum(), elapsed, latency, cpu, target.CpuScope, processCpu, counts);
    }

    private static async Task<long> RunMetaClientAsync(IBenchTarget target, MetaClient round, CancellationToken cancellationToken)
    {
        long done = 0;
        for (long i = 0; ; i++)
        {
            // The warm-up lets every client do at least one operation, however short it is.
            var mayStop = !round.Warmup || i > 0;
            if (mayStop && round.TimeLimit is { } limit && round.Clock.Elapsed >= limit)
            {
                break;
            }

            if (Interlocked.Decrement(ref round.Remaining.Value) < 0)
            {
                break;
            }

            var start = Stopwatch.GetTimestamp();
            switch (round.Op)
            {
                case BenchOp.Lookup:
                    var key = round.Lookup[(int)((round.Client + (i * round.Clients)) % round.Lookup.Length)];
                    var exists = await target.ExistsAsync(key, cancellationToken).ConfigureAwait(false);
                    Record(round.Histogram, start);
                    if (!exists)
                    {
                        throw new LoadGeneratorException($"{target.Name}: lookup of '{key}' found nothing");
                    }

                    break;

                case BenchOp.CreateDelete:
                    key = string.Create(CultureInfo.InvariantCulture, $"{round.Prefix}c{round.Client}/{i}");
                    await target.PutAsync(key, ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
                    Record(round.Histogram, start);

                    // The delete always follows, even past an --ops limit, so that no object is left behind.
                    Interlocked.Decrement(ref round.Remaining.Value);
                    start = Stopwatch.GetTimestamp();
                    await target.DeleteOneAsync(key, cancellationToken).ConfigureAwait(false);
                    Record(round.Histogram, start);
                    done++;
                    break;

                case BenchOp.List100:
                    var listed = await target.ListAsync(round.ListPrefix, ListedKeys, cancellationToken).ConfigureAwait(false);
                    Record(round.Histogram, start);
                    if (listed != ListedKeys)
                    {
                        throw new LoadGeneratorException($"{target.Name}: listing '{round.ListPrefix}' returned {listed} keys, expected {ListedKeys}");
                    }

                    break;

                case BenchOp.Count:
                    var counted = await target.CountAsync(round.ListPrefix, cancellationToken).ConfigureAwait(false);
                    Record(round.Histogram, start);
                    if (counted != ListedKeys)
                    {
                        throw new LoadGeneratorException($"{target.Name}: counting '{round.ListPrefix}' returned {counted}, expected {ListedKeys}");
                    }

                    break;

                default:
                    throw new InvalidOperationException($"{round.Op} is not a metadata operation");
            }

            done++;
        }

        return done;
    }

    private static void Record(PhaseLatency latency, long start) => latency.Record(start);

    /// <summary>The names of the objects a run reads (or looks up); a worker process rebuilds them from the count.</summary>
    internal static string[] PoolKeys(string opName, int count) =>
        [.. Enumerable.Range(0, count).Select(i => string.Create(CultureInfo.InvariantCulture, $"{opName}/pool/{i}"))];

    /// <summary>
    /// One timed phase in this process, as a worker process of `--processes` runs it: a warm-up (thrown away) of
    /// <paramref name="warmupSeconds"/> (the plan's when null) or the measured run, of slice <paramref name="slice"/>, over
    /// objects the parent wrote (<paramref name="poolCount"/> of them). <paramref name="tag"/> keeps the keys of this
    /// worker's puts apart from the other workers'.
    /// </summary>
    internal Task<BenchResult> MeasurePhaseAsync(IBenchTarget target, BenchOp op, int poolCount, bool warmup, string tag, int slice, double? warmupSeconds, CancellationToken cancellationToken)
    {
        var name = op.Name();
        var prepared = new Prepared(PoolKeys(name, poolCount), null);
        var prefix = PhasePrefix(name, warmup, slice) + tag;
        var timeLimit = warmup ? warmupSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : _plan.Warmup : _plan.Duration;
        return MeasureOnceAsync(target, op, prepared, prefix, warmup, timeLimit, cancellationToken);
    }

    private async Task<BenchResult> MeasureAsync(IBenchTarget target, BenchOp op, string prefix, string[] pool, long? opsLimit, TimeSpan? timeLimit, bool singleRound, CancellationToken cancellationToken)
    {
        var clients = _plan.Clients;
        using var histograms = new PhaseLatency();
        using var sendLag = new PhaseLatency();
        using var pacerLag = new PhaseLatency();
        using var service = new PhaseLatency();
        var cursors = new long[clients];
        var clientOps = new long[clients];
        var randoms = Enumerable.Range(0, clients).Select(c => new Random(c + 1)).ToArray();
        var remaining = new StrongBox(opsLimit ?? long.MaxValue);
        var perRound = op == BenchOp.Get ? int.MaxValue : _plan.KeysPerRound;
        var measured = TimeSpan.Zero;
        double? cpu = 0;
        double processCpu = 0;
        long ops = 0;
        for (var round = 0; ; round++)
        {
            var roundPrefix = string.Create(CultureInfo.InvariantCulture, $"{prefix}r{round}/");
            var written = Enumerable.Range(0, clients).Select(_ => new List<string>()).ToArray();
            var cpuBefore = await target.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
            var processBefore = Environment.CpuUsage.TotalTime;
            var clock = Stopwatch.StartNew();
            var timeLeft = timeLimit - measured;

            // Each round starts its own schedule: the untimed deletes between rounds are no time the clients owed.
            // The schedule's end counts from its own start: starting the pacer's thread between the two took
            // milliseconds on a loaded machine, and the slots of that gap were sent on top of the rate.
            var scheduleStart = Stopwatch.GetTimestamp();
            using var pacer = _plan.Rate is { } rate ? new RatePacer(rate, clients, scheduleStart, cancellationToken) : null;
            var pacing = pacer is null ? null : new Pacing(pacer, timeLeft is { } t ? scheduleStart + (long)(t.TotalSeconds * Stopwatch.Frequency) : long.MaxValue, sendLag, pacerLag, service);
            var tasks = new Task<long>[clients];
            for (var c = 0; c < clients; c++)
            {
                var client = new ClientRound(c, op, roundPrefix, pool, perRound, singleRound, timeLeft, clock, remaining, histograms, written[c], randoms[c], cursors, c < _buffers.Length ? _buffers[c] : [], pacing);
                var own = target.ForClient(c);
                tasks[c] = Task.Run(() => RunClientAsync(own, client, cancellationToken), cancellationToken);
            }

            var counts = await Task.WhenAll(tasks).ConfigureAwait(false);

            // An open-loop round spans its schedule even when its last reply came in before the schedule's end: no
            // second round for the sliver left, and the achieved rate is over the time the rate was offered.
            var elapsed = pacer is not null && timeLeft is { } span && clock.Elapsed < span ? span : clock.Elapsed;
            processCpu += (Environment.CpuUsage.TotalTime - processBefore).TotalSeconds;
            var cpuAfter = await target.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
            cpu = cpu is { } sum && cpuBefore is { } before && cpuAfter is { } after ? sum + (after - before) : null;
            measured += elapsed;
            var roundOps = counts.Sum();
            ops += roundOps;
            for (var c = 0; c < clients; c++)
            {
                clientOps[c] += counts[c];
            }

            var keys = written.SelectMany(k => k).ToList();
            if (keys.Count > 0)
            {
                await target.DeleteAsync(roundPrefix, keys, _plan.Size, cancellationToken).ConfigureAwait(false);
            }

            if (singleRound || roundOps == 0 || Interlocked.Read(ref remaining.Value) <= 0 || (timeLimit is { } limit && measured >= limit))
            {
                break;
            }
        }

        var latency = histograms.Merge();
        var paced = _plan.Rate is { } offered ? new PacedFigures(offered, sendLag.Merge(), pacerLag.Merge(), service.Merge()) : null;

        return new BenchResult(target.Name, op, _plan.Size, ops, measured, latency, cpu, target.CpuScope, processCpu, clientOps, paced);
    }

    private async Task<long> RunClientAsync(IBenchTarget target, ClientRound round, CancellationToken cancellationToken)
    {
        long done = 0;
        for (var i = 0; i < round.PerRound; i++)
        {
            // The warm-up lets every client do at least one operation, however short it is.
            var mayStop = !round.SingleRound || i > 0;
            if (mayStop && round.TimeLeft is { } left && round.Clock.Elapsed >= (round.Pacing is null ? left : 2 * left))
            {
                break;
            }

            // Open loop: request i of this client has its slot; past the time limit there is none. A client behind its
            // schedule still sends every slot before the limit: a backlog is latency the system caused (and lowers the
            // achieved rate), not requests left out, and the count of requests does not depend on the machine's load.
            // Only a system so far behind that the run takes twice its time is cut off there (above).
            var scheduled = 0L;
            if (round.Pacing is { } pacing)
            {
                scheduled = pacing.Pacer.Due(round.Client, i);
                if (mayStop && scheduled >= pacing.End)
                {
                    break;
                }
            }

            if (Interlocked.Decrement(ref round.Remaining.Value) < 0)
            {
                break;
            }

            var isPut = round.Op == BenchOp.Put || (round.Op == BenchOp.Mixed && round.Random.Next(2) == 0);
            string key;
            if (isPut)
            {
                key = string.Create(CultureInfo.InvariantCulture, $"{round.Prefix}c{round.Client}/{i}");
            }
            else
            {
                var n = round.Cursors[round.Client]++;
                key = round.Pool[(int)((round.Client + (n * _plan.Clients)) % round.Pool.Length)];
            }

            var waited = false;
            if (round.Pacing is { } paced && Stopwatch.GetTimestamp() < scheduled)
            {
                await paced.Pacer.WaitAsync(round.Client, i).ConfigureAwait(false);
                waited = true;
            }

            var start = Stopwatch.GetTimestamp();
            if (isPut)
            {
                await target.PutAsync(key, _value, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                var length = await target.GetAsync(key, round.Buffer, cancellationToken).ConfigureAwait(false);
                if (length != _plan.Size)
                {
                    throw new LoadGeneratorException($"{target.Name}: reading '{key}' returned {length} bytes, expected {_plan.Size}");
                }
            }

            if (round.Pacing is { } timed)
            {
                // From the slot, as wrk2 does: a late send's wait is latency the system caused, not time left out. A send
                // the pacer released a little early (its window) counts from the send.
                round.Histogram.Record(Math.Min(start, scheduled));
                timed.SendLag.RecordTicks(start - scheduled);
                if (waited)
                {
                    timed.PacerLag.RecordTicks(start - scheduled);
                }

                timed.Service.Record(start);
            }
            else
            {
                round.Histogram.Record(start);
            }

            if (isPut)
            {
                round.Written.Add(key);
            }

            done++;
        }

        return done;
    }

    /// <summary>What one client of a metadata run needs; the histogram is its own.</summary>
    private sealed record MetaClient(
        int Client,
        int Clients,
        BenchOp Op,
        string Prefix,
        string[] Lookup,
        string ListPrefix,
        bool Warmup,
        TimeSpan? TimeLimit,
        Stopwatch Clock,
        StrongBox Remaining,
        PhaseLatency Histogram);

    /// <summary>A shared counter that clients decrement with Interlocked.</summary>
    private sealed class StrongBox(long value)
    {
        public long Value = value;
    }

    /// <summary>What one client needs for one round; the histogram, key list and random are its own.</summary>
    private sealed record ClientRound(
        int Client,
        BenchOp Op,
        string Prefix,
        string[] Pool,
        int PerRound,
        bool SingleRound,
        TimeSpan? TimeLeft,
        Stopwatch Clock,
        StrongBox Remaining,
        PhaseLatency Histogram,
        List<string> Written,
        Random Random,
        long[] Cursors,
        byte[] Buffer,
        Pacing? Pacing);

    /// <summary>An open-loop round's schedule, where it ends (a <see cref="Stopwatch"/> timestamp) and its three extra histograms.</summary>
    private sealed record Pacing(RatePacer Pacer, long End, PhaseLatency SendLag, PhaseLatency PacerLag, PhaseLatency Service);
}

/// <summary>
/// The latencies of one phase: a histogram per thread that records (the client loops and the few pool threads the
/// clients' continuations run on), added up at the end. A histogram per client was 180 KiB each on the large-object
/// heap (an hour in microseconds at 3 digits): 0.9 GiB for 5,000 connections in a worker process, allocated and zeroed
/// again for each phase, with GC pauses charged to whichever system ran then. A thread's own histogram needs no
/// atomics; the phase's clients have all finished (awaited) before <see cref="Merge"/> reads them.
/// </summary>
internal sealed class PhaseLatency : IDisposable
{
    private readonly ThreadLocal<LongHistogram> _perThread = new(() => new LongHistogram(BenchRunner.HighestLatencyMicros, 3), trackAllValues: true);

    /// <summary>Records the time since <paramref name="start"/> (a <see cref="Stopwatch"/> timestamp) in microseconds.</summary>
    public void Record(long start)
    {
        var micros = Stopwatch.GetElapsedTime(start).Ticks / TimeSpan.TicksPerMicrosecond;
        _perThread.Value!.RecordValue(Math.Clamp(micros, 1, BenchRunner.HighestLatencyMicros));
    }

    /// <summary>Records a span of <see cref="Stopwatch"/> ticks in microseconds, where 0 is a value (a send on time).</summary>
    public void RecordTicks(long ticks)
    {
        var micros = (long)(ticks * 1e6 / Stopwatch.Frequency);
        _perThread.Value!.RecordValue(Math.Clamp(micros, 0, BenchRunner.HighestLatencyMicros));
    }

    public LongHistogram Merge() => Sum(_perThread.Values);

    /// <summary>One histogram of every value of <paramref name="histograms"/> (percentiles over all of them, never averaged).</summary>
    public static LongHistogram Sum(IEnumerable<LongHistogram> histograms)
    {
        var sum = new LongHistogram(BenchRunner.HighestLatencyMicros, 3);
        foreach (var histogram in histograms)
        {
            sum.Add(histogram);
        }

        return sum;
    }

    public void Dispose() => _perThread.Dispose();
}
