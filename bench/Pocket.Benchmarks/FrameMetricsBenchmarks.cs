using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Pocket.Metrics;
using Pocket.Protocol;

namespace Pocket.Benchmarks;

/// <summary>
/// What the metrics decorator adds to every request of the metadata server and the storage nodes: a timestamp, one
/// histogram observation and one counter increment (<see cref="FrameMetrics"/>). <c>Record</c> is that work for one
/// request; <c>RecordOnTwoThreads</c> has two threads record the same opcode at once (two connections of a 2-core
/// server), so the shared counters' cache lines move between cores as they would under load.
/// </summary>
[MemoryDiagnoser]
public class FrameMetricsBenchmarks
{
    private const int PerThread = 10_000;
    private FrameMetrics _metrics = null!;

    [GlobalSetup]
    public void Setup()
    {
        _metrics = new FrameMetrics("metadata", Prometheus.Metrics.NewCustomRegistry());

        // The labelled series are made on first use; a running server has made them long before.
        _metrics.Record(Opcode.Get, Status.Ok, Stopwatch.GetTimestamp());
    }

    [Benchmark]
    public void Record() => _metrics.Record(Opcode.Get, Status.Ok, Stopwatch.GetTimestamp());

    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public void RecordOnTwoThreads()
    {
        var other = Task.Factory.StartNew(Loop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Loop();
        other.Wait();
    }

    private void Loop()
    {
        for (var i = 0; i < PerThread; i++)
        {
            _metrics.Record(Opcode.Get, Status.Ok, Stopwatch.GetTimestamp());
        }
    }
}
