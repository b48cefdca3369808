using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using HdrHistogram;

namespace Pocket.LoadGenerator;

/// <summary>
/// What a worker process of `pocket bench --processes P` is told on its standard input (never on its command line,
/// where ps would show the job token): which system to connect to, how many connections to open, and its share of
/// the plan. <see cref="Resp"/> (NAME=resp://HOST:PORT) names a RESP peer; without it the worker connects to Pocket
/// at <see cref="Metadata"/> and opens the job. <see cref="Rate"/> is this worker's share of an open-loop rate.
/// </summary>
internal sealed record BenchWorkerSpec(
    int Worker,
    int Connections,
    long Size,
    long? Ops,
    double? DurationSeconds,
    double WarmupSeconds,
    int KeysPerRound,
    int PoolKeys,
    bool ReadsData,
    string Root,
    string? Resp = null,
    string? Metadata = null,
    string? JobId = null,
    string? JobToken = null,
    int? SmallObjectThreshold = null,
    string? TlsTrustFile = null,
    string? TlsName = null,
    double? Rate = null)
{
    public BenchPlan Plan() => new(
        Size,
        Connections,
        Ops,
        DurationSeconds is { } d ? TimeSpan.FromSeconds(d) : null,
        TimeSpan.FromSeconds(WarmupSeconds),
        KeysPerRound,
        PoolKeys,
        Rate);

    /// <summary>The prefix that keeps this worker's keys apart from the other workers' (`w3/`).</summary>
    public string Tag => string.Create(CultureInfo.InvariantCulture, $"w{Worker}/");
}

/// <summary>A line from the parent to a worker: connect, run a phase of an op, or exit.</summary>
/// <remarks>A phase of slice <see cref="Slice"/> (0 unless the bench runs in slices) keeps its keys apart from the other slices'; a warm-up lasts <see cref="Seconds"/> (the spec's warm-up when not given).</remarks>
internal sealed record WorkerCommand(string Command, string? Op = null, int Pool = 0, int Slice = 0, double? Seconds = null);

/// <summary>
/// A line from a worker to the parent. <see cref="Latency"/> is the histogram as pairs (value, count), flattened, so
/// the parent adds the workers' histograms rather than averaging their percentiles; <see cref="ClientOps"/> is each of
/// the worker's clients' operation count (the workers run for the same time, so the parent puts them side by side).
/// An open-loop phase adds its offered rate and its send-lag and service histograms, flattened the same way.
/// </summary>
internal sealed record WorkerReply(
    string Kind,
    int Connections = 0,
    double ConnectMs = 0,
    int Refused = 0,
    string? Refusal = null,
    long Ops = 0,
    double Seconds = 0,
    double ProcessCpuSeconds = 0,
    long[]? Latency = null,
    string? Error = null,
    long[]? ClientOps = null,
    double? OfferedOpsPerSecond = null,
    long[]? SendLag = null,
    long[]? PacerLag = null,
    long[]? Service = null)
{
    public const string Ready = "ready";
    public const string Connected = "connected";
    public const string Done = "done";
    public const string Failed = "failed";
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(BenchWorkerSpec))]
[JsonSerializable(typeof(WorkerCommand))]
[JsonSerializable(typeof(WorkerReply))]
internal sealed partial class WorkerJsonContext : JsonSerializerContext;

/// <summary>Turns workers' results into one, and one result into a reply.</summary>
internal static class WorkerResult
{
    public static WorkerReply ToReply(BenchResult result) => new(
        WorkerReply.Done,
        Ops: result.Ops,
        Seconds: result.Elapsed.TotalSeconds,
        ProcessCpuSeconds: result.ProcessCpuSeconds,
        Latency: Flatten(result.Latency),
        ClientOps: result.ClientOps,
        OfferedOpsPerSecond: result.Paced?.OfferedOpsPerSecond,
        SendLag: result.Paced is { } paced ? Flatten(paced.SendLag) : null,
        PacerLag: result.Paced is { } own ? Flatten(own.PacerLag) : null,
        Service: result.Paced is { } timed ? Flatten(timed.Service) : null);

    /// <summary>
    /// One result from the workers' parts: ops and histograms added, and ops/s the sum of the workers' ops/s (they run
    /// at the same time, each for the planned duration), which the result's elapsed time is set to give.
    /// </summary>
    public static BenchResult Merge(string system, BenchOp op, long size, IReadOnlyList<WorkerReply> parts, double? serverCpuSeconds, string? cpuScope)
    {
        var latency = new LongHistogram(BenchRunner.HighestLatencyMicros, 3);
        var sendLag = new LongHistogram(BenchRunner.HighestLatencyMicros, 3);
        var pacerLag = new LongHistogram(BenchRunner.HighestLatencyMicros, 3);
        var service = new LongHistogram(BenchRunner.HighestLatencyMicros, 3);
        double? offered = null;
        long ops = 0;
        double rate = 0;
        double processCpu = 0;
        var longest = 0.0;
        var clientOps = new List<long>();
        foreach (var part in parts)
        {
            clientOps.AddRange(part.ClientOps ?? []);
            Add(latency, part.Latency);
            Add(sendLag, part.SendLag);
            Add(pacerLag, part.PacerLag);
            Add(service, part.Service);
            if (part.OfferedOpsPerSecond is { } share)
            {
                offered = (offered ?? 0) + share;
            }

            ops += part.Ops;
            rate += part.Ops / Math.Max(part.Seconds, 1e-9);
            processCpu += part.ProcessCpuSeconds;
            longest = Math.Max(longest, part.Seconds);
        }

        var elapsed = ops > 0 && rate > 0 ? TimeSpan.FromSeconds(ops / rate) : TimeSpan.FromSeconds(longest);
        var paced = offered is { } offeredRate ? new PacedFigures(offeredRate, sendLag, pacerLag, service) : null;
        return new BenchResult(system, op, size, ops, elapsed, latency, serverCpuSeconds, cpuScope, processCpu, [.. clientOps], paced);
    }

    private static long[] Flatten(LongHistogram histogram)
    {
        var pairs = new List<long>();
        foreach (var value in histogram.RecordedValues())
        {
            pairs.Add(value.ValueIteratedTo);
            pairs.Add(value.CountAtValueIteratedTo);
        }

        return [.. pairs];
    }

    private static void Add(LongHistogram histogram, long[]? pairs)
    {
        pairs ??= [];
        for (var i = 0; i + 1 < pairs.Length; i += 2)
        {
            histogram.RecordValueWithCount(pairs[i], pairs[i + 1]);
        }
    }
}

/// <summary>
/// One system's connections spread over worker processes (`pocket bench --connections N --processes P`): each worker
/// is a child `pocket bench worker` that opens its share of the N connections and runs its share of every phase, so
/// that the load generator is not one process's threads. Untimed setup (writing the objects to read, deleting,
/// reading the servers' CPU) goes through <paramref name="shared"/> in this process.
/// </summary>
internal sealed class WorkerFleet : DelegatingBenchTarget
{
    private static readonly TimeSpan ExitWait = TimeSpan.FromSeconds(30);

    private readonly List<Worker> _workers;

    private WorkerFleet(IBenchTarget shared, List<Worker> workers)
        : base(shared)
    {
        _workers = workers;
    }

    public int Processes => _workers.Count;

    /// <summary>Connections the workers opened, summed.</summary>
    public int Connections { get; private set; }

    /// <summary>Connections that could not be opened, summed.</summary>
    public int Refused { get; private set; }

    /// <summary>Why the first refused connection of the first worker that had one could not be opened (null when none was).</summary>
    public string? Refusal { get; private set; }

    /// <summary>
    /// The wall time of the connect storm: every worker starts connecting at once, on one command, so the storm
    /// took as long as its slowest worker (summing the workers' times would count the same wall time P times).
    /// </summary>
    public double ConnectMs { get; private set; }

    /// <summary>Each worker's own connect time, in worker order.</summary>
    public IReadOnlyList<double> ConnectMsPerProcess { get; private set; } = [];

    /// <summary>
    /// Starts <paramref name="processes"/> workers (<paramref name="executable"/> with <paramref name="arguments"/>),
    /// gives each its spec (<paramref name="spec"/> of its worker index and share of connections and ops), waits for
    /// all to be ready, then has them connect at once.
    /// </summary>
    public static async Task<WorkerFleet> StartAsync(
        IBenchTarget shared,
        string executable,
        IReadOnlyList<string> arguments,
        int processes,
        int connections,
        long? ops,
        Func<int, int, long?, BenchWorkerSpec> spec,
        CancellationToken cancellationToken)
    {
        var workers = new List<Worker>(processes);
        var fleet = new WorkerFleet(shared, workers);
        try
        {
            for (var i = 0; i < processes; i++)
            {
                var share = Share(connections, processes, i);
                long? opsShare = ops is { } n ? Share(n, processes, i) : null;
                workers.Add(Worker.Start(executable, arguments, spec(i, share, opsShare)));
            }

            await fleet.AllAsync(w => w.ExpectAsync(WorkerReply.Ready, cancellationToken)).ConfigureAwait(false);
            foreach (var worker in workers)
            {
                await worker.SendAsync(new WorkerCommand("connect"), cancellationToken).ConfigureAwait(false);
            }

            var connected = await fleet.AllAsync(w => w.ExpectAsync(WorkerReply.Connected, cancellationToken)).ConfigureAwait(false);
            fleet.Connections = connected.Sum(c => c.Connections);
            fleet.Refused = connected.Sum(c => c.Refused);
            fleet.Refusal = connected.Select(c => c.Refusal).FirstOrDefault(r => r is not null);
            fleet.ConnectMsPerProcess = [.. connected.Select(c => c.ConnectMs)];
            fleet.ConnectMs = connected.Max(c => c.ConnectMs);
            return fleet;
        }
        catch
        {
            await fleet.StopAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Has every worker run one phase of <paramref name="op"/> at once; returns their results.</summary>
    public async Task<WorkerReply[]> RunPhaseAsync(BenchOp op, int poolCount, bool warmup, int slice, double? warmupSeconds, CancellationToken cancellationToken)
    {
        var command = new WorkerCommand(warmup ? "warm" : "run", op.Name(), poolCount, slice, warmup ? warmupSeconds : null);
        foreach (var worker in _workers)
        {
            await worker.SendAsync(command, cancellationToken).ConfigureAwait(false);
        }

        return await AllAsync(w => w.ExpectAsync(WorkerReply.Done, cancellationToken)).ConfigureAwait(false);
    }

    public override async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await Shared.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Worker <paramref name="index"/>'s part of <paramref name="total"/>: equal shares, the first ones one more.</summary>
    internal static int Share(int total, int parts, int index) => (int)Share((long)total, parts, index);

    internal static long Share(long total, int parts, int index) => (total / parts) + (index < total % parts ? 1 : 0);

    /// <summary>Asks each worker to exit (closing its connections), and ends any that has not within a bound.</summary>
    private async Task StopAsync()
    {
        await Task.WhenAll(_workers.Select(w => w.StopAsync())).ConfigureAwait(false);
    }

    private async Task<WorkerReply[]> AllAsync(Func<Worker, Task<WorkerReply>> each)
    {
        var tasks = _workers.Select(each).ToArray();
        try
        {
            return await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch when (tasks.Select(t => t.Exception?.GetBaseException()).OfType<LoadGeneratorException>().FirstOrDefault() is { } first)
        {
            // The first worker's own error rather than whichever Task.WhenAll happens to pick.
            throw first;
        }
    }

    /// <summary>One worker process: commands on its stdin, replies on its stdout, the tail of its stderr kept for errors.</summary>
    private sealed class Worker
    {
        private const int StderrLinesKept = 20;

        private readonly Process _process;
        private readonly int _index;
        private readonly Queue<string> _stderr = new();
        private readonly Task _stderrDrain;

        private Worker(Process process, int index)
        {
            _process = process;
            _index = index;
            _stderrDrain = DrainStderrAsync();
        }

        public static Worker Start(string executable, IReadOnlyList<string> arguments, BenchWorkerSpec spec)
        {
            var start = new ProcessStartInfo(executable)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                StandardOutputEncoding = Encoding.UTF8,
                StandardErrorEncoding = Encoding.UTF8,
            };
            foreach (var argument in arguments)
            {
                start.ArgumentList.Add(argument);
            }

            Process process;
            try
            {
                process = Process.Start(start) ?? throw new LoadGeneratorException($"could not start {executable}");
            }
            catch (System.ComponentModel.Win32Exception ex)
            {
                throw new LoadGeneratorException($"could not start bench worker {spec.Worker} ({executable}): {ex.Message}", ex);
            }

            var worker = new Worker(process, spec.Worker);
            process.StandardInput.AutoFlush = true;
            process.StandardInput.WriteLine(JsonSerializer.Serialize(spec, WorkerJsonContext.Default.BenchWorkerSpec));
            return worker;
        }

        public async Task SendAsync(WorkerCommand command, CancellationToken cancellationToken)
        {
            try
            {
                await _process.StandardInput.WriteLineAsync(JsonSerializer.Serialize(command, WorkerJsonContext.Default.WorkerCommand).AsMemory(), cancellationToken).ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                throw await FailedAsync($"its input closed ({ex.Message})").ConfigureAwait(false);
            }
        }

        /// <summary>The next reply, which must be of <paramref name="kind"/>; a failure or an early exit becomes an error naming the worker.</summary>
        public async Task<WorkerReply> ExpectAsync(string kind, CancellationToken cancellationToken)
        {
            var line = await _process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            if (line is null)
            {
                throw await FailedAsync("it exited").ConfigureAwait(false);
            }

            WorkerReply? reply;
            try
            {
                reply = JsonSerializer.Deserialize(line, WorkerJsonContext.Default.WorkerReply);
            }
            catch (JsonException)
            {
                reply = null;
            }

            if (reply is null)
            {
                throw await FailedAsync($"it printed '{line}'").ConfigureAwait(false);
            }

            if (reply.Kind == WorkerReply.Failed)
            {
                throw new LoadGeneratorException($"bench worker {_index} (pid {_process.Id}): {reply.Error}");
            }

            return reply.Kind == kind ? reply : throw await FailedAsync($"it replied '{reply.Kind}' where '{kind}' was due").ConfigureAwait(false);
        }

        public async Task StopAsync()
        {
            using var _ = _process;
            try
            {
                // A worker also exits when its input closes, so a parent that dies leaves no worker behind.
                _process.StandardInput.Close();
            }
            catch (IOException)
            {
            }

            using var wait = new CancellationTokenSource(ExitWait);
            try
            {
                await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }

            await _stderrDrain.ConfigureAwait(false);
        }

        private async Task<LoadGeneratorException> FailedAsync(string what)
        {
            // Its last words explain most failures; wait a little for them.
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
                await _stderrDrain.WaitAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }

            string tail;
            lock (_stderr)
            {
                tail = string.Join(" | ", _stderr);
            }

            var exit = _process.HasExited ? string.Create(CultureInfo.InvariantCulture, $", exit code {_process.ExitCode}") : string.Empty;
            return new LoadGeneratorException($"bench worker {_index} (pid {_process.Id}) failed: {what}{exit}{(tail.Length > 0 ? ": " + tail : string.Empty)}");
        }

        private async Task DrainStderrAsync()
        {
            while (await _process.StandardError.ReadLineAsync().ConfigureAwait(false) is { } line)
            {
                lock (_stderr)
                {
                    _stderr.Enqueue(line);
                    if (_stderr.Count > StderrLinesKept)
                    {
                        _stderr.Dequeue();
                    }
                }
            }
        }
    }
}

/// <summary>
/// The worker's side (`pocket bench worker`): reads its spec, says it is ready, opens its connections on the parent's
/// word, runs each phase it is told to and replies with the result, and exits when its input closes.
/// </summary>
internal static class BenchWorker
{
    public static async Task<int> RunAsync(
        TextReader input,
        TextWriter output,
        Func<BenchWorkerSpec, CancellationToken, Task<(IBenchTarget Shared, Func<CancellationToken, Task<(IBenchTarget Target, IAsyncDisposable Owner)>> ConnectOne)>> open,
        CancellationToken cancellationToken)
    {
        void Reply(WorkerReply reply)
        {
            output.WriteLine(JsonSerializer.Serialize(reply, WorkerJsonContext.Default.WorkerReply));
            output.Flush();
        }

        var specLine = await input.ReadLineAsync(cancellationToken).ConfigureAwait(false);
        BenchWorkerSpec? spec;
        try
        {
            spec = specLine is null ? null : JsonSerializer.Deserialize(specLine, WorkerJsonContext.Default.BenchWorkerSpec);
        }
        catch (JsonException ex)
        {
            throw new LoadGeneratorException($"bench worker: the spec line is not a spec ({ex.Message})", ex);
        }

        if (spec is null || spec.Connections < 1)
        {
            throw new LoadGeneratorException("bench worker: expected a spec line on standard input (this command is started by `pocket bench --processes`)");
        }

        IBenchTarget? target = null;
        try
        {
            var (shared, connectOne) = await open(spec, cancellationToken).ConfigureAwait(false);
            target = shared;
            var runner = new BenchRunner(spec.Plan(), spec.ReadsData, _ => { });
            Reply(new WorkerReply(WorkerReply.Ready));
            while (await input.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
            {
                var command = JsonSerializer.Deserialize(line, WorkerJsonContext.Default.WorkerCommand)
                    ?? throw new LoadGeneratorException($"bench worker: '{line}' is not a command");
                switch (command.Command)
                {
                    case "connect":
                        var fanIn = await FanInBenchTarget.ConnectAsync(shared, spec.Connections, connectOne, cancellationToken).ConfigureAwait(false);
                        target = fanIn;
                        Reply(new WorkerReply(WorkerReply.Connected, Connections: fanIn.Connections, ConnectMs: fanIn.ConnectMs, Refused: fanIn.Refused, Refusal: fanIn.Refusal));
                        break;

                    case "warm" or "run":
                        var op = Enum.GetValues<BenchOp>().FirstOrDefault(o => o.Name() == command.Op);
                        if (op.Name() != command.Op)
                        {
                            throw new LoadGeneratorException($"bench worker: unknown op '{command.Op}'");
                        }

                        var result = await runner.MeasurePhaseAsync(target, op, command.Pool, command.Command == "warm", spec.Tag, command.Slice, command.Seconds, cancellationToken).ConfigureAwait(false);
                        Reply(WorkerResult.ToReply(result));
                        break;

                    default:
                        throw new LoadGeneratorException($"bench worker: unknown command '{command.Command}'");
                }
            }

            return 0;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Whatever failed (a bug's InvalidOperationException included) goes back to the parent as one line naming the
            // target, which the parent prints with this worker's number and exits 1: never a stack dump, never a hang.
            var what = ex is LoadGeneratorException or Client.PocketException or IOException or StackExchange.Redis.RedisException or JsonException
                ? ex.Message
                : $"{ex.GetType().Name}: {ex.Message}";
            Reply(new WorkerReply(WorkerReply.Failed, Error: $"against {TargetOf(spec)}: {what}"));
            return 1;
        }
        finally
        {
            if (target is not null)
            {
                await target.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>What a worker runs against, for its errors: the RESP peer, or Pocket's metadata server and job.</summary>
    private static string TargetOf(BenchWorkerSpec spec) =>
        spec.Resp ?? $"Pocket at {spec.Metadata ?? "(no metadata server)"} (job {spec.JobId ?? "(none)"})";
}
