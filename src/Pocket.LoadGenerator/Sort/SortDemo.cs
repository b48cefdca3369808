using System.Diagnostics;

namespace Pocket.LoadGenerator.Sort;

/// <summary>One phase of the sort: how many functions, how long, what they read and wrote.</summary>
internal sealed record PhaseReport(string Name, int Functions, double Seconds, long Records, long BytesRead, long BytesWritten);

/// <summary>The sort's outcome. <see cref="Verified"/> is true only when the output is sorted and holds exactly the input's records.</summary>
internal sealed record SortReport(SortPlan Plan, IReadOnlyList<PhaseReport> Phases, RecordChecksum Input, RecordChecksum Output, bool Sorted, string? Problem)
{
    public bool Verified => Sorted && Input == Output && Problem is null;

    public double Seconds => Phases.Sum(p => p.Seconds);

    /// <summary>Bytes that went into or out of the store, over all phases.</summary>
    public long BytesMoved => Phases.Sum(p => p.BytesRead + p.BytesWritten);
}

/// <summary>Told about progress, from any thread: a phase starts with its number of steps, steps finish, the phase ends.</summary>
internal interface ISortObserver
{
    void PhaseStarted(string phase, int steps);

    void StepDone(string phase);

    void PhaseDone(PhaseReport report);
}

/// <summary>
/// The driver of the serverless sort: generate the input objects, run every mapper at once, then every reducer at
/// once (a stage barrier, as a serverless framework has between stages), then read the output back and check it.
/// </summary>
internal sealed class SortDemo(IShuffleStore store, IFunctionRunner functions, SortPlan plan, ISortObserver observer)
{
    public const string Generate = "generate";
    public const string Map = "map";
    public const string Reduce = "reduce";
    public const string Verify = "verify";

    public async Task<SortReport> RunAsync(CancellationToken cancellationToken)
    {
        var phases = new List<PhaseReport>();

        // Generating is the driver's work, not a function's; parts are made a few at a time to bound memory.
        var input = RecordChecksum.Empty;
        var checksums = new RecordChecksum[plan.Mappers];
        phases.Add(await PhaseAsync(Generate, plan.Mappers, Math.Max(1, Environment.ProcessorCount), async (i, ct) =>
        {
            var (result, checksum) = await Task.Run(() => SortFunctions.GenerateAsync(store, plan, i, ct), ct).ConfigureAwait(false);
            checksums[i] = checksum;
            return result;
        }, cancellationToken).ConfigureAwait(false));
        foreach (var checksum in checksums)
        {
            input = input.Combine(checksum);
        }

        phases.Add(await PhaseAsync(Map, plan.Mappers, plan.Mappers, functions.MapAsync, cancellationToken).ConfigureAwait(false));
        phases.Add(await PhaseAsync(Reduce, plan.Reducers, plan.Reducers, functions.ReduceAsync, cancellationToken).ConfigureAwait(false));

        var (verify, output, sorted, problem) = await VerifyAsync(cancellationToken).ConfigureAwait(false);
        phases.Add(verify);
        if (problem is null)
        {
            // Each stage must have passed on every record, whatever the checksums say at the end.
            foreach (var phase in phases.Where(p => p.Records != plan.Records))
            {
                problem = $"{phase.Name} saw {phase.Records} records, not {plan.Records}";
                break;
            }
        }

        return new SortReport(plan, phases, input, output, sorted, problem);
    }

    private async Task<PhaseReport> PhaseAsync(string name, int steps, int parallelism, Func<int, CancellationToken, Task<FunctionResult>> step, CancellationToken cancellationToken)
    {
        observer.PhaseStarted(name, steps);
        var clock = Stopwatch.StartNew();
        using var window = new SemaphoreSlim(parallelism);
        var results = await Task.WhenAll(Enumerable.Range(0, steps).Select(async i =>
        {
            await window.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                var result = await step(i, cancellationToken).ConfigureAwait(false);
                observer.StepDone(name);
                return result;
            }
            finally
            {
                window.Release();
            }
        })).ConfigureAwait(false);
        var report = new PhaseReport(name, steps, clock.Elapsed.TotalSeconds, results.Sum(r => r.Records), results.Sum(r => r.BytesRead), results.Sum(r => r.BytesWritten));
        observer.PhaseDone(report);
        return report;
    }

    /// <summary>Reads the outputs in reducer order: every key at least the one before it, across parts too, and the records' checksum.</summary>
    private async Task<(PhaseReport Report, RecordChecksum Output, bool Sorted, string? Problem)> VerifyAsync(CancellationToken cancellationToken)
    {
        observer.PhaseStarted(Verify, plan.Reducers);
        var clock = Stopwatch.StartNew();
        var checksum = RecordChecksum.Empty;
        var previous = new byte[SortRecords.KeySize];
        var first = true;
        string? problem = null;
        long bytes = 0;

        // One part is fetched while the one before is checked.
        var next = store.GetAsync(SortPlan.OutputKey(0), cancellationToken).AsTask();
        for (var r = 0; r < plan.Reducers; r++)
        {
            var data = await next.ConfigureAwait(false);
            if (r + 1 < plan.Reducers)
            {
                next = store.GetAsync(SortPlan.OutputKey(r + 1), cancellationToken).AsTask();
            }

            bytes += data.Length;
            var count = SortRecords.CountOf(data.Length, SortPlan.OutputKey(r));
            for (var i = 0; i < count; i++)
            {
                var record = data.AsSpan((int)i * SortRecords.RecordSize, SortRecords.RecordSize);
                if (problem is null && !first && SortRecords.CompareKeys(record, previous) < 0)
                {
                    problem = $"record {i} of {SortPlan.OutputKey(r)} sorts before the record ahead of it";
                }

                record[..SortRecords.KeySize].CopyTo(previous);
                first = false;
                checksum = checksum.Add(SortRecords.Hash(record));
            }

            observer.StepDone(Verify);
        }

        var report = new PhaseReport(Verify, 1, clock.Elapsed.TotalSeconds, checksum.Count, bytes, 0);
        observer.PhaseDone(report);
        return (report, checksum, problem is null, problem);
    }
}
