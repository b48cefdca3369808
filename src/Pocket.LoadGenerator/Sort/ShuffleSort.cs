using System.Diagnostics;
using System.Globalization;

namespace Pocket.LoadGenerator.Sort;

/// <summary>
/// The shape of one sort: how many records, split over how many input objects (one per mapper), shuffled to how many
/// reducers, and the keys of every object. input/part-i -> (map i) -> shuffle/i-r -> (reduce r) -> output/part-r.
/// </summary>
internal sealed record SortPlan(long Records, int Mappers, int Reducers, ulong Seed)
{
    public long Bytes => Records * SortRecords.RecordSize;

    /// <summary>Records of input part <paramref name="index"/>: an even split, the remainder spread over the first parts.</summary>
    public long RecordsOf(int index) => (Records * (index + 1) / Mappers) - (Records * index / Mappers);

    public static string InputKey(int mapper) => string.Create(CultureInfo.InvariantCulture, $"input/part-{mapper:D5}");

    public static string ShuffleKey(int mapper, int reducer) => string.Create(CultureInfo.InvariantCulture, $"shuffle/{mapper:D5}-{reducer:D5}");

    public static string OutputKey(int reducer) => string.Create(CultureInfo.InvariantCulture, $"output/part-{reducer:D5}");

    /// <summary>Each input part has its own stream of random records, so parts can be made in parallel and again later.</summary>
    public ulong SeedOf(int mapper) => Seed ^ (0xD1B54A32D192ED03UL * (ulong)(mapper + 1));
}

/// <summary>What one function (or the driver, for generate and verify) did.</summary>
internal sealed record FunctionResult(long Records, long BytesRead, long BytesWritten, double Seconds);

/// <summary>
/// The functions of the sort, each a pure "read objects, compute, write objects" step against an
/// <see cref="IShuffleStore"/>, exactly what a Lambda would run. A mapper and a reducer know only their index and the
/// plan's shape; they share nothing in memory, so they run as tasks or as separate processes alike.
/// </summary>
internal static class SortFunctions
{
    /// <summary>Makes input part <paramref name="mapper"/> and stores it; returns its checksum (what the sort must preserve).</summary>
    public static async Task<(FunctionResult Result, RecordChecksum Checksum)> GenerateAsync(IShuffleStore store, SortPlan plan, int mapper, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var records = plan.RecordsOf(mapper);
        var data = new byte[checked((int)(records * SortRecords.RecordSize))];
        SortRecords.Generate(data, plan.SeedOf(mapper));
        var checksum = SortRecords.Checksum(data);
        await store.PutAsync(SortPlan.InputKey(mapper), data, cancellationToken).ConfigureAwait(false);
        return (new FunctionResult(records, 0, data.Length, clock.Elapsed.TotalSeconds), checksum);
    }

    /// <summary>Mapper <paramref name="mapper"/>: reads its input part and writes one shuffle object per reducer, by key range.</summary>
    public static async Task<FunctionResult> MapAsync(IShuffleStore store, int mapper, int reducers, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var key = SortPlan.InputKey(mapper);
        var input = await store.GetAsync(key, cancellationToken).ConfigureAwait(false);
        var count = SortRecords.CountOf(input.Length, key);

        // Two passes: count each bucket, then copy every record straight to its place.
        var bucketOf = new int[count];
        var sizes = new int[reducers];
        for (var i = 0; i < count; i++)
        {
            var bucket = SortRecords.Bucket(input.AsSpan(i * SortRecords.RecordSize, SortRecords.RecordSize), reducers);
            bucketOf[i] = bucket;
            sizes[bucket] += SortRecords.RecordSize;
        }

        var buckets = sizes.Select(size => new byte[size]).ToArray();
        var filled = new int[reducers];
        for (var i = 0; i < count; i++)
        {
            var bucket = bucketOf[i];
            input.AsSpan(i * SortRecords.RecordSize, SortRecords.RecordSize).CopyTo(buckets[bucket].AsSpan(filled[bucket]));
            filled[bucket] += SortRecords.RecordSize;
        }

        // Every reducer gets an object, empty or not, so it never has to tell "empty" from "not written yet".
        await Task.WhenAll(buckets.Select((bucket, reducer) => store.PutAsync(SortPlan.ShuffleKey(mapper, reducer), bucket, cancellationToken).AsTask())).ConfigureAwait(false);
        return new FunctionResult(count, input.Length, input.Length, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Reducer <paramref name="reducer"/>: reads its shuffle object from every mapper, sorts, writes its output part.</summary>
    public static async Task<FunctionResult> ReduceAsync(IShuffleStore store, int reducer, int mappers, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var parts = await Task.WhenAll(Enumerable.Range(0, mappers).Select(m => store.GetAsync(SortPlan.ShuffleKey(m, reducer), cancellationToken).AsTask())).ConfigureAwait(false);
        var total = 0L;
        for (var m = 0; m < mappers; m++)
        {
            total += SortRecords.CountOf(parts[m].Length, SortPlan.ShuffleKey(m, reducer)) * SortRecords.RecordSize;
        }

        var all = new byte[checked((int)total)];
        var offset = 0;
        foreach (var part in parts)
        {
            part.CopyTo(all, offset);
            offset += part.Length;
        }

        var sorted = SortRecords.Sort(all);
        await store.PutAsync(SortPlan.OutputKey(reducer), sorted, cancellationToken).ConfigureAwait(false);
        return new FunctionResult(total / SortRecords.RecordSize, total, sorted.Length, clock.Elapsed.TotalSeconds);
    }
}

/// <summary>How a driver runs one map or reduce function: as a task here, or as a process of its own.</summary>
internal interface IFunctionRunner
{
    /// <summary>"tasks" or "processes", for reports.</summary>
    string Kind { get; }

    Task<FunctionResult> MapAsync(int mapper, CancellationToken cancellationToken);

    Task<FunctionResult> ReduceAsync(int reducer, CancellationToken cancellationToken);
}

/// <summary>Functions as concurrent tasks in this process, sharing its client (one multiplexed connection per server).</summary>
internal sealed class TaskFunctionRunner(IShuffleStore store, SortPlan plan) : IFunctionRunner
{
    public string Kind => "tasks";

    // Task.Run: the CPU work of a function must not run on the caller's thread, or functions would take turns.
    public Task<FunctionResult> MapAsync(int mapper, CancellationToken cancellationToken) =>
        Task.Run(() => SortFunctions.MapAsync(store, mapper, plan.Reducers, cancellationToken), cancellationToken);

    public Task<FunctionResult> ReduceAsync(int reducer, CancellationToken cancellationToken) =>
        Task.Run(() => SortFunctions.ReduceAsync(store, reducer, plan.Mappers, cancellationToken), cancellationToken);
}
