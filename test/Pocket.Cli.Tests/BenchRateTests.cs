using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Pocket.LoadGenerator;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket bench --rate`: the open loop offers the rate asked for (counted, not timed), latency counts from each
/// request's scheduled time (a server made slow in the test shows it above send-to-reply), the report carries the
/// open-loop figures, and bad rates are refused with one clear line.
/// </summary>
public sealed class BenchRateTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task BenchRateOffersTheRateOverTheWorkersAndReportsTheOpenLoopFigures()
    {
        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "4", "--processes", "2", "--rate", "2000", "--duration", "2s", "--warmup", "0s",
            "--size", "1KiB", "--op", "get", "--node-capacity", "64MiB", "--json");

        var report = result.Json();
        Assert.Equal(2000, report["config"]!["rate"]!.GetValue<double>());
        var get = report["systems"]!["pocket"]!["get"]!;

        // 2 s of slots 0.5 ms apart are 4,000 requests, however late the machine sends them; a closed loop sends tens
        // of thousands. The bounds allow for a slot at the very end of each worker's 2 s.
        var ops = get["ops"]!.GetValue<long>();
        Assert.InRange(ops, 3_990, 4_010);
        Assert.Equal(ops, get["samples"]!.GetValue<long>());
        Assert.Equal(2000, get["offered_ops_per_s"]!.GetValue<double>());
        Assert.InRange(get["ops_per_s"]!.GetValue<double>(), 500, 2_010);
        Assert.Equal("scheduled", get["latency_from"]!.GetValue<string>());
        foreach (var field in new[] { "achieved_of_offered", "send_lag_p50_us", "send_lag_p99_us", "send_lag_max_us", "pacer_lag_p50_us", "pacer_lag_p99_us", "pacer_lag_share", "service_p50_us", "service_p99_us", "p90_us" })
        {
            Assert.True(get[field] is not null, $"{field} missing: {get}");
        }

        Assert.True(get["service_p50_us"]!.GetValue<long>() > 0, get.ToString());
        Assert.True(get["p99_us"]!.GetValue<long>() >= get["p90_us"]!.GetValue<long>(), get.ToString());
        Assert.Equal(get["ops_per_s"]!.GetValue<double>() < 0.97 * 2000, get["below_offered"]!.GetValue<bool>());
    }

    [Fact]
    public async Task BenchRateCountsLatencyFromTheScheduleWhenTheServerFallsBehind()
    {
        // test.sh installs redis-server. Every reply of this peer comes 20 ms late, so one connection serves at most
        // 50 requests a second: at 100 offered, request k is sent about k x 10 ms after its slot.
        await using var redis = await RedisProcess.StartAsync();
        await using var slow = DelayingProxy.Start(redis.Port, TimeSpan.FromMilliseconds(20));

        var result = await PocketProcess.RunOkAsync(
            _home.Path,
            "bench", "--connections", "1", "--rate", "100", "--ops", "60", "--warmup", "0s", "--size", "1KiB", "--op", "get",
            "--node-capacity", "64MiB", "--vs", $"slow=resp://127.0.0.1:{slow.Port}", "--json");

        var get = result.Json()["systems"]!["slow"]!["get"]!;
        Assert.Equal(60, get["ops"]!.GetValue<long>());
        var service = get["service_p50_us"]!.GetValue<long>();
        Assert.True(service >= 19_000, $"send to reply p50 {service} us, the peer delays every reply 20 ms: {get}");

        // Timed from the send, the p50 would be the service time; from the schedule it holds the growing backlog too.
        Assert.True(get["p50_us"]!.GetValue<long>() > 2 * service, $"p50 from the schedule against service {service} us: {get}");
        Assert.True(get["send_lag_p50_us"]!.GetValue<long>() > service, get.ToString());

        // Those sends were late because the replies were, not the pacer: next to none waited for its slot.
        Assert.True(get["pacer_lag_share"]!.GetValue<double>() < 0.1, get.ToString());
        Assert.True(get["below_offered"]!.GetValue<bool>(), get.ToString());
        Assert.Contains("could not keep up", get["warning"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Contains("warning: slow get achieved", result.Stderr, StringComparison.Ordinal);
        Assert.Equal("0", (await redis.CommandAsync("DBSIZE")).Trim());
    }

    [Theory]
    [InlineData("--rate 0", "--rate '0' is not a rate in ops/s above 0")]
    [InlineData("--rate -5", "--rate '-5' is not a rate in ops/s above 0")]
    [InlineData("--rate fast", "--rate 'fast' is not a rate in ops/s above 0")]
    [InlineData("--rate NaN", "--rate 'NaN' is not a rate in ops/s above 0")]
    [InlineData("--rate 1e12", "--rate '1e12' is not a rate in ops/s above 0")]
    [InlineData("--rate 100 --op meta", "--rate paces put, get and mixed; 'lookup' runs closed-loop only")]
    public async Task BenchRefusesABadRateWithOneClearLine(string arguments, string message)
    {
        var result = await PocketProcess.RunAsync(_home.Path, ["bench", .. arguments.Split(' ')]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task APacedClientIsNeverReleasedBeforeItsSlotsWindow()
    {
        using var cts = new CancellationTokenSource(PocketProcess.Timeout);

        // The schedule starts 2 s from now: a client task that starts late on a loaded machine still finds its first slot
        // ahead of it (starting now, the 40 ms of slots had all passed once in CI before any client ran, and none waited).
        using var pacer = new RatePacer(5_000, 4, Stopwatch.GetTimestamp() + (2 * Stopwatch.Frequency), cts.Token);
        var waited = 0;
        var clients = Enumerable.Range(0, 4).Select(c => Task.Run(async () =>
        {
            for (var k = 0L; k < 50; k++)
            {
                var due = pacer.Due(c, k);
                if (Stopwatch.GetTimestamp() < due)
                {
                    await pacer.WaitAsync(c, k);
                    Interlocked.Increment(ref waited);
                }

                // Ordering, not timing: a release never comes before the pacer's window reaches the slot.
                Assert.True(Stopwatch.GetTimestamp() >= due - RatePacer.EarlyTicks, $"client {c} request {k} released before its slot's window");
            }
        }));

        await Task.WhenAll(clients).WaitAsync(cts.Token);
        Assert.True(waited > 0, "no client ever waited for its slot");
    }

    [Fact]
    public async Task CancellingTheRunEndsAPacedWait()
    {
        using var cts = new CancellationTokenSource();
        using var pacer = new RatePacer(1, 2, Stopwatch.GetTimestamp(), cts.Token);

        // Request 100 of client 1 is due in about 200 s.
        var wait = pacer.WaitAsync(1, 100).AsTask();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait.WaitAsync(PocketProcess.Timeout));
    }

    /// <summary>A loopback TCP proxy to a real server that holds every chunk of the server's replies back for a while.</summary>
    private sealed class DelayingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener;
        private readonly int _upstream;
        private readonly TimeSpan _delay;
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _pumps = [];
        private readonly Task _accepting;

        private DelayingProxy(int upstream, TimeSpan delay)
        {
            _listener = new TcpListener(IPAddress.Loopback, 0);
            _listener.Start();
            _upstream = upstream;
            _delay = delay;
            _accepting = AcceptAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public static DelayingProxy Start(int upstream, TimeSpan delay) => new(upstream, delay);

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            Task[] pumps;
            lock (_pumps)
            {
                pumps = [.. _pumps];
            }

            await Task.WhenAll(pumps).WaitAsync(PocketProcess.Timeout);
            _stop.Dispose();
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var client = await _listener.AcceptSocketAsync(_stop.Token);
                    var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    await server.ConnectAsync(IPAddress.Loopback, _upstream, _stop.Token);
                    client.NoDelay = true;
                    lock (_pumps)
                    {
                        _pumps.Add(PumpAsync(client, server, TimeSpan.Zero));
                        _pumps.Add(PumpAsync(server, client, _delay));
                    }
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }

        private async Task PumpAsync(Socket from, Socket to, TimeSpan delay)
        {
            var buffer = new byte[64 << 10];
            try
            {
                while (true)
                {
                    var read = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    if (read == 0)
                    {
                        break;
                    }

                    if (delay > TimeSpan.Zero)
                    {
                        await Task.Delay(delay, _stop.Token);
                    }

                    await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
            finally
            {
                // Either side closing closes the other: the bench's connection and Redis's see the same end.
                from.Dispose();
                to.Dispose();
            }
        }
    }
}
