using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Pocket.Cli.Tests;

/// <summary>
/// A real redis-server on a free loopback port, without persistence, stopped on dispose. Redis cannot bind port 0 and
/// report it, so a port the OS just handed out (and that was closed again) is used, and the start is retried on
/// another port if something took it meanwhile.
/// </summary>
internal sealed class RedisProcess : IAsyncDisposable
{
    private readonly Process _process;

    private RedisProcess(Process process, int port)
    {
        _process = process;
        Port = port;
    }

    public int Port { get; }

    public static async Task<RedisProcess> StartAsync()
    {
        for (var attempt = 0; ; attempt++)
        {
            var port = FreePort();
            var start = new ProcessStartInfo("redis-server")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var argument in new[] { "--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" })
            {
                start.ArgumentList.Add(argument);
            }

            var process = Process.Start(start) ?? throw new InvalidOperationException("could not start redis-server");
            _ = process.StandardError.ReadToEndAsync();
            var redis = new RedisProcess(process, port);
            if (await redis.WaitUntilServingAsync())
            {
                return redis;
            }

            await redis.DisposeAsync();
            if (attempt == 2)
            {
                throw new InvalidOperationException("redis-server did not start on three free ports");
            }
        }
    }

    /// <summary>One command in RESP's inline form; returns the reply's first line without its type byte.</summary>
    public async Task<string> CommandAsync(string command)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        await using var stream = new NetworkStream(socket);
        using var writer = new StreamWriter(stream) { NewLine = "\r\n", AutoFlush = true };
        using var reader = new StreamReader(stream);
        await writer.WriteLineAsync(command);
        var line = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) ?? string.Empty;
        return line.Length > 0 ? line[1..] : line;
    }

    /// <summary>One field of `INFO section` (its bulk reply read whole), e.g. total_connections_received of stats.</summary>
    public async Task<long> InfoFieldAsync(string section, string field)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        await using var stream = new NetworkStream(socket);
        using var writer = new StreamWriter(stream) { NewLine = "\r\n", AutoFlush = true };
        using var reader = new StreamReader(stream);
        await writer.WriteLineAsync($"INFO {section}");
        var header = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) ?? string.Empty;
        var length = header.StartsWith('$') ? int.Parse(header.AsSpan(1), CultureInfo.InvariantCulture) : throw new InvalidOperationException($"INFO replied '{header}'");
        var body = new char[length];
        await reader.ReadBlockAsync(body).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        foreach (var line in new string(body).Split("\r\n"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(field.Length + 1), CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException($"INFO {section} has no {field}");
    }

    public async ValueTask DisposeAsync()
    {
        using var _ = _process;
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Redis logs one line when it accepts connections; it exits (its output ends) when the port is taken.</summary>
    private async Task<bool> WaitUntilServingAsync()
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            while (await _process.StandardOutput.ReadLineAsync(bound.Token) is { } line)
            {
                if (line.Contains("Ready to accept connections", StringComparison.Ordinal))
                {
                    _ = _process.StandardOutput.ReadToEndAsync();
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }

        return false;
    }
}
