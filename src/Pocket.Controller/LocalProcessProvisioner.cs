using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Protocol;

namespace Pocket.Controller;

/// <summary>Settings of <see cref="LocalProcessProvisioner"/>.</summary>
public sealed record LocalProcessProvisionerOptions
{
    /// <summary>The program to run (the `pocket` executable, or `dotnet`).</summary>
    public required string Executable { get; init; }

    /// <summary>Arguments before the role's own (e.g. the path of pocket.dll when <see cref="Executable"/> is dotnet).</summary>
    public IReadOnlyList<string> BaseArguments { get; init; } = [];

    /// <summary>host:port of the metadata server the nodes register with.</summary>
    public required string MetadataAddress { get; init; }

    /// <summary>Passed to the child in its environment (POCKET_CLUSTER_TOKEN), never on its command line.</summary>
    public JobToken ClusterToken { get; init; }

    /// <summary>Where ssd and hdd nodes keep their files.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Allocation unit of the nodes (a power of two); null leaves the storage role's default.</summary>
    public int? BlockSize { get; init; }

    /// <summary>The nodes' idle timeout for client connections (`--idle-timeout`); null leaves the storage role's default.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>How long a child may take to register.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The executable that runs this process, so children run the same build.</summary>
    public static (string Executable, IReadOnlyList<string> BaseArguments) CurrentProgram()
    {
        var process = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which program is running");
        var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
        return Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.OrdinalIgnoreCase) && !string.IsNullOrEmpty(entry)
            ? (process, [entry])
            : (process, []);
    }
}

/// <summary>
/// Starts each storage node as a child process running `pocket storage`, the default of `pocket up`: nodes are
/// separate processes as on real hosts, and a node that crashes takes only itself down. The child prints one
/// line, <c>POCKET-NODE id=N address=HOST:PORT</c>, once registered; stopping a node ends its process.
/// </summary>
public sealed class LocalProcessProvisioner : IStorageProvisioner, IAsyncDisposable
{
    /// <summary>The line a storage child prints once it is registered.</summary>
    public const string ReadyPrefix = "POCKET-NODE ";

    private readonly LocalProcessProvisionerOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<string, Process> _children = [];
    private readonly Lock _lock = new();

    /// <summary>Makes a provisioner; nothing starts until asked.</summary>
    public LocalProcessProvisioner(LocalProcessProvisionerOptions options, ILoggerFactory loggerFactory)
    {
        _options = options;
        _logger = loggerFactory.CreateLogger<LocalProcessProvisioner>();
    }

    /// <inheritdoc />
    public IReadOnlyCollection<NodeTier> Tiers { get; } = [NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd];

    /// <summary>Child processes still running.</summary>
    public int Running
    {
        get
        {
            lock (_lock)
            {
                return _children.Values.Count(p => !p.HasExited);
            }
        }
    }

    /// <inheritdoc />
    public async Task<ProvisionedNode> StartNodeAsync(NodeRequest request, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(_options.Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in _options.BaseArguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.ArgumentList.Add("storage");
        start.ArgumentList.Add("--stop-on-stdin-eof");
        start.ArgumentList.Add("--metadata");
        start.ArgumentList.Add(_options.MetadataAddress);
        start.ArgumentList.Add("--tier");
        start.ArgumentList.Add(request.Tier.ToString().ToLowerInvariant());
        start.ArgumentList.Add("--capacity");
        start.ArgumentList.Add(request.CapacityBytes.ToString(CultureInfo.InvariantCulture));
        if (request.Standby)
        {
            start.ArgumentList.Add("--standby");
        }

        if (_options.BlockSize is { } blockSize)
        {
            start.ArgumentList.Add("--block-size");
            start.ArgumentList.Add(blockSize.ToString(CultureInfo.InvariantCulture));
        }

        if (_options.IdleTimeout is { } idleTimeout)
        {
            start.ArgumentList.Add("--idle-timeout");
            start.ArgumentList.Add(idleTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture) + "s");
        }

        if (request.Tier != NodeTier.Dram && _options.DataDirectory is { } directory)
        {
            start.ArgumentList.Add("--data-dir");
            start.ArgumentList.Add(directory);
        }

        if (!_options.ClusterToken.IsNone)
        {
            start.Environment["POCKET_CLUSTER_TOKEN"] = _options.ClusterToken.ToString();
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new ProvisioningException($"could not start {_options.Executable}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new ProvisioningException($"could not start {_options.Executable}: {ex.Message}", ex);
        }

        var stderr = new System.Text.StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (stderr)
                {
                    if (stderr.Length < 8192)
                    {
                        stderr.AppendLine(line);
                    }
                }
            }
        };
        process.BeginErrorReadLine();

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.StartTimeout);
        try
        {
            while (true)
            {
                var line = await process.StandardOutput.ReadLineAsync(timeout.Token).ConfigureAwait(false);
                if (line is null)
                {
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    string errors;
                    lock (stderr)
                    {
                        errors = stderr.ToString().Trim();
                    }

                    throw new ProvisioningException($"storage process exited with code {process.ExitCode} before registering: {errors}");
                }

                if (line.StartsWith(ReadyPrefix, StringComparison.Ordinal) && TryParseReady(line, out var id, out var address))
                {
                    var handle = process.Id.ToString(CultureInfo.InvariantCulture);
                    lock (_lock)
                    {
                        _children[handle] = process;
                    }

                    // Keep draining stdout so the child never blocks on a full pipe.
                    _ = DrainAsync(process);
                    ControllerLog.ProcessNodeStarted(_logger, id, address, process.Id);
                    return new ProvisionedNode(request.Tier, handle, id, address);
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Kill(process);
            throw new ProvisioningException($"storage process {process.Id} did not register within {_options.StartTimeout.TotalSeconds:0} s");
        }
        catch
        {
            Kill(process);
            throw;
        }
    }

    internal static bool TryParseReady(string line, out uint id, out string address)
    {
        id = 0;
        address = string.Empty;
        foreach (var part in line[ReadyPrefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.StartsWith("id=", StringComparison.Ordinal))
            {
                _ = uint.TryParse(part.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out id);
            }
            else if (part.StartsWith("address=", StringComparison.Ordinal))
            {
                address = part[8..];
            }
        }

        return id != 0 && address.Length > 0;
    }

    private static async Task DrainAsync(Process process)
    {
        try
        {
            while (await process.StandardOutput.ReadLineAsync().ConfigureAwait(false) is not null)
            {
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
    }

    /// <inheritdoc />
    public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        Process? process;
        lock (_lock)
        {
            _children.Remove(node.Handle, out process);
        }

        if (process is null)
        {
            throw new ArgumentException($"'{node.Handle}' is not a process this provisioner started", nameof(node));
        }

        await StopAsync(process, cancellationToken).ConfigureAwait(false);
    }

    private static async Task StopAsync(Process process, CancellationToken cancellationToken)
    {
        if (!process.HasExited)
        {
            // Closing stdin asks the child to shut down cleanly; it is killed if it does not within 10 s.
            try
            {
                process.StandardInput.Close();
            }
            catch (IOException)
            {
            }

            using var grace = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            grace.CancelAfter(TimeSpan.FromSeconds(10));
            try
            {
                await process.WaitForExitAsync(grace.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Kill(process);
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }

        process.Dispose();
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }

    /// <summary>Stops every child still running.</summary>
    public async ValueTask DisposeAsync()
    {
        List<Process> children;
        lock (_lock)
        {
            children = [.. _children.Values];
            _children.Clear();
        }

        await Task.WhenAll(children.Select(p => StopAsync(p, CancellationToken.None))).ConfigureAwait(false);
    }
}
