using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pocket.Limits;

/// <summary>
/// The ceilings a storage service on this machine can approach: the loopback round trip (1-byte ping-pong on
/// blocking sockets, one dedicated thread per side: the floor any request/response pays), one-stream loopback
/// bandwidth with 1 MiB writes, and memory copy between two pre-touched 256 MiB buffers. Prints JSON.
///
///   dotnet run -c Release --project bench/Pocket.Limits [-- --pings N] [--stream-seconds S] [--copy-rounds N]
/// </summary>
internal static class Program
{
    private const int StreamWrite = 1 << 20;
    private const int CopyBytes = 256 << 20;

    public static int Main(string[] args)
    {
        var pings = 20_000;
        var streamSeconds = 3.0;
        var copyRounds = 10;
        for (var i = 0; i < args.Length; i++)
        {
            var value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "--pings" when int.TryParse(value, CultureInfo.InvariantCulture, out var n) && n > 0:
                    pings = n;
                    i++;
                    break;
                case "--stream-seconds" when double.TryParse(value, CultureInfo.InvariantCulture, out var s) && s > 0:
                    streamSeconds = s;
                    i++;
                    break;
                case "--copy-rounds" when int.TryParse(value, CultureInfo.InvariantCulture, out var r) && r > 0:
                    copyRounds = r;
                    i++;
                    break;
                default:
                    Console.Error.WriteLine("usage: Pocket.Limits [--pings N] [--stream-seconds S] [--copy-rounds N]");
                    return 2;
            }
        }

        var result = new JsonObject
        {
            ["loopback_round_trip"] = PingPong(pings),
            ["loopback_stream"] = Stream(TimeSpan.FromSeconds(streamSeconds)),
            ["memcpy"] = MemoryCopy(copyRounds),
            ["processors"] = Environment.ProcessorCount,
            ["runtime"] = RuntimeInformation.FrameworkDescription,
            ["os"] = RuntimeInformation.OSDescription,
        };
        Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    private static (Socket Client, Socket Server) Connect()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.Connect(listener.LocalEndPoint!);
        var server = listener.Accept();
        server.NoDelay = true;
        return (client, server);
    }

    private static JsonObject PingPong(int count)
    {
        var (client, server) = Connect();
        using var _ = client;
        using var __ = server;
        var warmup = Math.Max(1000, count / 10);
        var echo = new Thread(() =>
        {
            var one = new byte[1];
            for (var i = 0; i < warmup + count; i++)
            {
                if (server.Receive(one) != 1)
                {
                    return;
                }

                server.Send(one);
            }
        })
        { IsBackground = true, Name = "echo" };
        echo.Start();

        var message = new byte[] { 42 };
        var micros = new double[count];
        for (var i = 0; i < warmup + count; i++)
        {
            var start = Stopwatch.GetTimestamp();
            client.Send(message);
            if (client.Receive(message) != 1)
            {
                throw new IOException("echo side closed");
            }

            if (i >= warmup)
            {
                micros[i - warmup] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
            }
        }

        echo.Join();
        Array.Sort(micros);
        return new JsonObject
        {
            ["what"] = "1-byte ping-pong over 127.0.0.1, blocking sockets, TCP_NODELAY, one thread per side",
            ["round_trips"] = count,
            ["p50_us"] = Round(Percentile(micros, 50), 1),
            ["p99_us"] = Round(Percentile(micros, 99), 1),
            ["p999_us"] = Round(Percentile(micros, 99.9), 1),
            ["ops_per_s"] = Round(count / (micros.Sum() / 1e6), 0),
        };
    }

    private static JsonObject Stream(TimeSpan duration)
    {
        var (client, server) = Connect();
        using var _ = client;
        using var __ = server;
        long received = 0;
        var reader = new Thread(() =>
        {
            var buffer = GC.AllocateUninitializedArray<byte>(StreamWrite, pinned: true);
            buffer.AsSpan().Clear();
            int n;
            while ((n = server.Receive(buffer)) > 0)
            {
                received += n;
            }
        })
        { IsBackground = true, Name = "sink" };
        reader.Start();

        var chunk = GC.AllocateUninitializedArray<byte>(StreamWrite, pinned: true);
        Random.Shared.NextBytes(chunk);

        // A short untimed start lets the socket buffers grow before the clock runs.
        var warm = Stopwatch.StartNew();
        while (warm.Elapsed < TimeSpan.FromMilliseconds(300))
        {
            client.Send(chunk);
        }

        long sent = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < duration)
        {
            sent += client.Send(chunk);
        }

        var elapsed = clock.Elapsed.TotalSeconds;
        client.Shutdown(SocketShutdown.Send);
        reader.Join();
        return new JsonObject
        {
            ["what"] = "one TCP stream over 127.0.0.1, 1 MiB blocking writes, reader thread with a 1 MiB buffer",
            ["seconds"] = Round(elapsed, 2),
            ["gb_per_s"] = Round(sent / elapsed / 1e9, 2),
            ["mib_per_s"] = Round(sent / elapsed / (1 << 20), 0),
            ["bytes_received"] = received,
        };
    }

    private static unsafe JsonObject MemoryCopy(int rounds)
    {
        var source = (byte*)NativeMemory.AlignedAlloc(CopyBytes, 4096);
        var destination = (byte*)NativeMemory.AlignedAlloc(CopyBytes, 4096);
        try
        {
            // Touched first: the first write to fresh pages costs ~40x a copy here and is not what is measured.
            new Span<byte>(source, CopyBytes).Fill(1);
            new Span<byte>(destination, CopyBytes).Fill(2);
            var seconds = new double[rounds];
            for (var r = 0; r < rounds; r++)
            {
                var start = Stopwatch.GetTimestamp();
                Buffer.MemoryCopy(source, destination, CopyBytes, CopyBytes);
                seconds[r] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            }

            Array.Sort(seconds);
            return new JsonObject
            {
                ["what"] = "Buffer.MemoryCopy of 256 MiB between two pre-touched native buffers, bytes copied per second",
                ["rounds"] = rounds,
                ["median_gb_per_s"] = Round(CopyBytes / Percentile(seconds, 50) / 1e9, 2),
                ["best_gb_per_s"] = Round(CopyBytes / seconds[0] / 1e9, 2),
            };
        }
        finally
        {
            NativeMemory.AlignedFree(source);
            NativeMemory.AlignedFree(destination);
        }
    }

    private static double Percentile(double[] sorted, double percentile)
    {
        var index = (int)Math.Ceiling(percentile / 100 * sorted.Length) - 1;
        return sorted[Math.Clamp(index, 0, sorted.Length - 1)];
    }

    private static double Round(double value, int digits) => Math.Round(value, digits, MidpointRounding.AwayFromZero);
}
