using System.Globalization;
using Microsoft.Extensions.Logging;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

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
    private readonly Dictionary<string, RoleProcess> _children = [];
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
        List<string> arguments =
        [
            .. _options.BaseArguments,
            "storage", "--stop-on-stdin-eof",
            "--metadata", _options.MetadataAddress,
            "--tier", request.Tier.Name(),
            "--capacity", request.CapacityBytes.ToString(CultureInfo.InvariantCulture),
        ];
        if (request.Standby)
        {
            arguments.Add("--standby");
        }

        if (_options.BlockSize is { } blockSize)
        {
            arguments.AddRange(["--block-size", blockSize.ToString(CultureInfo.InvariantCulture)]);
        }

        if (_options.IdleTimeout is { } idleTimeout)
        {
            arguments.AddRange(["--idle-timeout", idleTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture) + "s"]);
        }

        if (request.Tier != NodeTier.Dram && _options.DataDirectory is { } directory)
        {
            arguments.AddRange(["--data-dir", directory]);
        }

        var child = await RoleProcess.StartAsync(
            _options.Executable, arguments, _options.ClusterToken, ReadyPrefix, line => TryParseReady(line, out _, out _),
            "storage process", "register", _options.StartTimeout, cancellationToken).ConfigureAwait(false);
        _ = TryParseReady(child.ReadyLine, out var id, out var address);
        var handle = child.Id.ToString(CultureInfo.InvariantCulture);
        lock (_lock)
        {
            _children[handle] = child;
        }

        ControllerLog.ProcessNodeStarted(_logger, id, address, child.Id);
        return new ProvisionedNode(request.Tier, handle, id, address);
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

    /// <inheritdoc />
    public async Task StopNodeAsync(ProvisionedNode node, CancellationToken cancellationToken)
    {
        RoleProcess? process;
        lock (_lock)
        {
            _children.Remove(node.Handle, out process);
        }

        if (process is null)
        {
            throw new ArgumentException($"'{node.Handle}' is not a process this provisioner started", nameof(node));
        }

        await process.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops every child still running.</summary>
    public async ValueTask DisposeAsync()
    {
        List<RoleProcess> children;
        lock (_lock)
        {
            children = [.. _children.Values];
            _children.Clear();
        }

        await Task.WhenAll(children.Select(p => p.StopAsync(CancellationToken.None))).ConfigureAwait(false);
    }
}
