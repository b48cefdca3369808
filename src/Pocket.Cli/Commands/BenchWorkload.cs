using System.Diagnostics;
using System.Globalization;
using HdrHistogram;

namespace Pocket.Cli.Commands;

internal enum BenchOp
{
    Put,
    Get,
    Mixed,
}

/// <summary>
/// What every system gets, identically. <see cref="KeysPerRound"/> bounds the live data of a put run: clients
/// write that many unique keys each, then (untimed, with every client stopped) the round's keys are deleted,
/// so a long run neither fills Pocket's capacity nor grows Redis without end.
/// </summary>
internal sealed record BenchPlan(long Size, int Clients, long? Ops, TimeSpan? Duration, TimeSpan Warmup, int KeysPerRound, int PoolKeys);

/// <summary>One system running one kind of operation. CPU figures are seconds over the timed rounds only.</summary>
internal sealed record BenchResult(string System, BenchOp Op, long Size, long Ops, TimeSpan Elapsed, LongHistogram Latency, double? CpuSeconds, string? CpuScope, double ProcessCpuSeconds)
{
    public double OpsPerSecond => Ops / Math.Max(Elapsed.TotalSeconds, 1e-9);

    public double MiBPerSecond => OpsPerSecond * Size / (1 << 20);

    public long PercentileMicros(double percentile) => Ops == 0 ? 0 : Latency.GetValueAtPercentile(percentile);

    public double? CpuMicrosPerOp => CpuSeconds is { } s && Ops > 0 ? s * 1e6 / Ops : null;

    public double ProcessCpuMicrosPerOp => Ops > 0 ? ProcessCpuSeconds * 1e6 / Ops : 0;
}

/// <summary>
/// Runs one operation against one system: keys for reads are written first (untimed), a warm-up runs and is
/// thrown away, then every client issues sequential operations until the op count or the time is used up.
/// </summary>
internal sealed class BenchRunner
{
    /// <summary>An hour in microseconds: no single operation of a sane run takes longer.</summary>
    private const long HighestLatencyMicros = 3_600_000_000;

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

    public async Task<BenchResult> RunAsync(IBenchTarget target, BenchOp op, CancellationToken cancellationToken)
    {
        var name = op.ToString().ToLowerInvariant();
        var pool = op == BenchOp.Put ? [] : await WritePoolAsync(target, name, cancellationToken).ConfigureAwait(false);
        try
        {
            if (_plan.Warmup > TimeSpan.Zero)
            {
                _status($"{target.Name} {name}: warm-up {Units.FormatDuration(_plan.Warmup)}");
                await MeasureAsync(target, op, $"{name}/warm/", pool, null, _plan.Warmup, singleRound: true, cancellationToken).ConfigureAwait(false);
            }

            _status($"{target.Name} {name}: measuring");
            return await MeasureAsync(target, op, $"{name}/run/", pool, _plan.Ops, _plan.Duration, singleRound: false, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (pool.Length > 0)
            {
                // Runs even after Ctrl-C: a peer such as Redis would otherwise keep the keys.
                await target.DeleteAsync($"{name}/pool/", pool, _plan.Size, CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private async Task<string[]> WritePoolAsync(IBenchTarget target, string name, CancellationToken cancellationToken)
    {
        _status($"{target.Name} {name}: writing {_plan.PoolKeys} keys to read");
        var keys = Enumerable.Range(0, _plan.PoolKeys).Select(i => string.Create(CultureInfo.InvariantCulture, $"{name}/pool/{i}")).ToArray();
        var options = new ParallelOptions { MaxDegreeOfParallelism = _plan.Clients, CancellationToken = cancellationToken };
        await Parallel.ForEachAsync(keys, options, (key, ct) => target.PutAsync(key, _value, ct)).ConfigureAwait(false);
        return keys;
    }

    private async Task<BenchResult> MeasureAsync(IBenchTarget target, BenchOp op, string prefix, string[] pool, long? opsLimit, TimeSpan? timeLimit, bool singleRound, CancellationToken cancellationToken)
    {
        var clients = _plan.Clients;
        var histograms = Enumerable.Range(0, clients).Select(_ => new LongHistogram(HighestLatencyMicros, 3)).ToArray();
        var cursors = new long[clients];
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
            var tasks = new Task<long>[clients];
            for (var c = 0; c < clients; c++)
            {
                var client = new ClientRound(c, op, roundPrefix, pool, perRound, singleRound, timeLeft, clock, remaining, histograms[c], written[c], randoms[c], cursors, c < _buffers.Length ? _buffers[c] : []);
                tasks[c] = Task.Run(() => RunClientAsync(target, client, cancellationToken), cancellationToken);
            }

            var counts = await Task.WhenAll(tasks).ConfigureAwait(false);
            var elapsed = clock.Elapsed;
            processCpu += (Environment.CpuUsage.TotalTime - processBefore).TotalSeconds;
            var cpuAfter = await target.CpuSecondsAsync(cancellationToken).ConfigureAwait(false);
            cpu = cpu is { } sum && cpuBefore is { } before && cpuAfter is { } after ? sum + (after - before) : null;
            measured += elapsed;
            var roundOps = counts.Sum();
            ops += roundOps;

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

        var latency = new LongHistogram(HighestLatencyMicros, 3);
        foreach (var histogram in histograms)
        {
            latency.Add(histogram);
        }

        return new BenchResult(target.Name, op, _plan.Size, ops, measured, latency, cpu, target.CpuScope, processCpu);
    }

    private async Task<long> RunClientAsync(IBenchTarget target, ClientRound round, CancellationToken cancellationToken)
    {
        long done = 0;
        for (var i = 0; i < round.PerRound; i++)
        {
            // The warm-up lets every client do at least one operation, however short it is.
            var mayStop = !round.SingleRound || i > 0;
            if (mayStop && round.TimeLeft is { } left && round.Clock.Elapsed >= left)
            {
                break;
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
                    throw new CliException($"{target.Name}: reading '{key}' returned {length} bytes, expected {_plan.Size}");
                }
            }

            var micros = Stopwatch.GetElapsedTime(start).Ticks / TimeSpan.TicksPerMicrosecond;
            round.Histogram.RecordValue(Math.Clamp(micros, 1, HighestLatencyMicros));
            if (isPut)
            {
                round.Written.Add(key);
            }

            done++;
        }

        return done;
    }

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
        LongHistogram Histogram,
        List<string> Written,
        Random Random,
        long[] Cursors,
        byte[] Buffer);
}
