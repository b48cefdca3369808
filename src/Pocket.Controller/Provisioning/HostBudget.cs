using System.Globalization;
using System.Runtime.InteropServices;
using Pocket.Controller.Contracts;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>How much of the host <see cref="HostBudget"/> keeps for everything that is not a storage node.</summary>
public sealed record HostBudgetOptions
{
    /// <summary>
    /// Memory left for the operating system, the controller, the metadata server and the clients on the host; null:
    /// the larger of 1 GiB and 10 % of the host's memory.
    /// </summary>
    public long? MemoryReserveBytes { get; init; }

    /// <summary>Space left free in the data directory's file system; null: the larger of 1 GiB and 5 % of it.</summary>
    public long? DiskReserveBytes { get; init; }

    /// <summary>What a node process takes besides its capacity (runtime, buffers, connections).</summary>
    public long NodeOverheadBytes { get; init; } = 128L << 20;
}

/// <summary>What the host has and what its running nodes still hold or were promised, as <see cref="HostBudget"/> reads it.</summary>
/// <param name="MemoryTotalBytes">The host's memory (or its cgroup's limit, when lower).</param>
/// <param name="MemoryAvailableBytes">Memory available to new work now (MemAvailable, or the cgroup's headroom when lower).</param>
/// <param name="DiskTotalBytes">Size of the data directory's file system; 0 when there is none.</param>
/// <param name="DiskFreeBytes">Space free to this user in it.</param>
public readonly record struct HostResources(long MemoryTotalBytes, long MemoryAvailableBytes, long DiskTotalBytes, long DiskFreeBytes);

/// <summary>
/// Where <see cref="HostBudget"/> reads the host: the real one is <see cref="LinuxHostProbe"/>; tests of the arithmetic
/// may hand it a host of any size.
/// </summary>
public interface IHostProbe
{
    /// <summary>The host's memory and the file system of <paramref name="directory"/> (none when null).</summary>
    HostResources Read(string? directory);

    /// <summary>Resident memory of process <paramref name="processId"/>; 0 when it has ended.</summary>
    long ResidentBytes(int processId);

    /// <summary>Disk blocks the files of process <paramref name="processId"/> in <paramref name="directory"/> take.</summary>
    long AllocatedBytes(string directory, int processId);
}

/// <summary>A storage node a provisioner is running, as the budget counts it.</summary>
/// <param name="Tier">Its tier: dram nodes hold their capacity in memory, ssd and hdd nodes in files.</param>
/// <param name="CapacityBytes">The capacity it was started with.</param>
/// <param name="ProcessId">Its process; 0 while it is being started.</param>
public readonly record struct RunningNode(NodeTier Tier, long CapacityBytes, int ProcessId);

/// <summary>
/// Checks a host's free memory and disk before a local node starts, so the controller refuses a node the host cannot
/// hold instead of over-committing it (a dram node that later cannot fault its memory in, or an ssd node whose sparse
/// file hits a full disk, fails its jobs long after the start looked fine). A running node is counted at what it
/// was promised, not at what it touched so far: its capacity (and overhead) minus what it already holds, which the
/// host's free figures no longer include.
/// </summary>
public sealed class HostBudget(HostBudgetOptions options, IHostProbe probe, string? dataDirectory)
{
    private const long GiB = 1L << 30;

    /// <summary>The host as it stands, with <paramref name="running"/> counted at their promises.</summary>
    public HostBudgetResponse Report(IReadOnlyCollection<RunningNode> running)
    {
        var host = probe.Read(dataDirectory);
        long memoryPromised = 0, diskPromised = 0;
        foreach (var node in running)
        {
            var memory = options.NodeOverheadBytes + (node.Tier == NodeTier.Dram ? node.CapacityBytes : 0);
            // A start under way (no process yet) holds nothing so far.
            var started = node.ProcessId > 0;
            memoryPromised += Math.Max(0, memory - (started ? probe.ResidentBytes(node.ProcessId) : 0));
            if (node.Tier != NodeTier.Dram && dataDirectory is not null)
            {
                diskPromised += Math.Max(0, node.CapacityBytes - (started ? probe.AllocatedBytes(dataDirectory, node.ProcessId) : 0));
            }
        }

        return new HostBudgetResponse(
            host.MemoryTotalBytes,
            host.MemoryAvailableBytes,
            memoryPromised,
            options.MemoryReserveBytes ?? Math.Max(GiB, host.MemoryTotalBytes / 10),
            dataDirectory,
            host.DiskTotalBytes,
            host.DiskFreeBytes,
            diskPromised,
            options.DiskReserveBytes ?? Math.Max(GiB, host.DiskTotalBytes / 20));
    }

    /// <summary>Null when the host holds a node of <paramref name="request"/>'s tier and size besides <paramref name="running"/>; else why not.</summary>
    public string? Refusal(NodeRequest request, IReadOnlyCollection<RunningNode> running)
    {
        var budget = Report(running);
        // "a dram node", "an ssd node", "an hdd node".
        var tier = (request.Tier == NodeTier.Dram ? "a " : "an ") + NodeTierNames.Name(request.Tier);
        var memoryNeeded = options.NodeOverheadBytes + (request.Tier == NodeTier.Dram ? request.CapacityBytes : 0);
        if (memoryNeeded > budget.MemoryLeftBytes)
        {
            return $"not enough memory on this host for {tier} node of {Units.FormatBytes(request.CapacityBytes)}: it needs "
                + $"{Units.FormatBytes(memoryNeeded)} (with {Units.FormatBytes(options.NodeOverheadBytes)} for the process), and of the "
                + $"{Units.FormatBytes(budget.MemoryAvailableBytes)} available, {Units.FormatBytes(budget.MemoryPromisedBytes)} is promised to "
                + $"{running.Count} running node(s) and {Units.FormatBytes(budget.MemoryReserveBytes)} is kept for the rest of the host; "
                + "stop a job or a node, or start smaller nodes (--node-capacity)";
        }

        if (request.Tier != NodeTier.Dram && budget.Directory is { } directory && request.CapacityBytes > budget.DiskLeftBytes)
        {
            return $"not enough disk in {directory} for {tier} node of {Units.FormatBytes(request.CapacityBytes)}: of the "
                + $"{Units.FormatBytes(budget.DiskFreeBytes)} free, {Units.FormatBytes(budget.DiskPromisedBytes)} is promised to running "
                + $"ssd/hdd node(s) and {Units.FormatBytes(budget.DiskReserveBytes)} is kept free; "
                + "free space there, choose another --data-dir, or start smaller nodes (--node-capacity)";
        }

        return null;
    }
}

/// <summary>The host as Linux reports it: /proc/meminfo, the process's cgroup (v2) limit, statvfs and statx.</summary>
public sealed partial class LinuxHostProbe : IHostProbe
{
    /// <summary>The one instance; it keeps no state.</summary>
    public static LinuxHostProbe Instance { get; } = new();

    /// <inheritdoc />
    public HostResources Read(string? directory)
    {
        var info = MemInfo();
        var total = info.GetValueOrDefault("MemTotal");
        var available = info.GetValueOrDefault("MemAvailable", info.GetValueOrDefault("MemFree"));
        if (CgroupLimit() is { } limit)
        {
            total = Math.Min(total, limit.Max);
            available = Math.Min(available, Math.Max(0, limit.Max - limit.Current));
        }

        long diskTotal = 0, diskFree = 0;
        if (directory is not null)
        {
            // The directory may not exist yet (the first node makes it): its nearest existing parent is on the same disk.
            var existing = Path.GetFullPath(directory);
            while (!Directory.Exists(existing) && Path.GetDirectoryName(existing) is { } parent)
            {
                existing = parent;
            }

            try
            {
                var drive = new DriveInfo(existing);
                (diskTotal, diskFree) = (drive.TotalSize, drive.AvailableFreeSpace);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
            {
                // Unknown: counted as no space, so ssd/hdd nodes are refused with the figures shown.
            }
        }

        return new HostResources(total, available, diskTotal, diskFree);
    }

    /// <inheritdoc />
    public long ResidentBytes(int processId)
    {
        try
        {
            // Second field of statm: resident pages.
            var fields = File.ReadAllText($"/proc/{processId}/statm").Split(' ');
            return long.Parse(fields[1], CultureInfo.InvariantCulture) * Environment.SystemPageSize;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }

    /// <inheritdoc />
    public long AllocatedBytes(string directory, int processId)
    {
        long total = 0;
        var pid = processId.ToString(CultureInfo.InvariantCulture);
        try
        {
            // The storage role names its files pocket-{tier}-{pid}-{guid}.blocks and removes the name once the file is
            // open (FileDevice), so on Linux they are found through the process's open files; statx through the
            // /proc link reaches the (deleted) file itself.
            var fds = $"/proc/{pid}/fd";
            if (Directory.Exists(fds))
            {
                var prefix = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)) + Path.DirectorySeparatorChar;
                foreach (var link in Directory.EnumerateFileSystemEntries(fds))
                {
                    var target = new FileInfo(link).LinkTarget;
                    if (target is not null && target.StartsWith(prefix, StringComparison.Ordinal) && Path.GetFileName(target).StartsWith("pocket-", StringComparison.Ordinal)
                        && target.Contains($"-{pid}-", StringComparison.Ordinal) && target.Contains(".blocks", StringComparison.Ordinal))
                    {
                        total += Allocated(link);
                    }
                }

                return total;
            }

            foreach (var file in Directory.EnumerateFiles(directory, $"pocket-*-{pid}-*.blocks"))
            {
                total += Allocated(file);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return total;
    }

    private static Dictionary<string, long> MemInfo()
    {
        var values = new Dictionary<string, long>(StringComparer.Ordinal);
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                // "MemAvailable:   19814072 kB"
                var colon = line.IndexOf(':', StringComparison.Ordinal);
                var parts = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (colon > 0 && parts.Length > 0 && long.TryParse(parts[0], CultureInfo.InvariantCulture, out var value))
                {
                    values[line[..colon]] = parts.Length > 1 && parts[1] == "kB" ? value * 1024 : value;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return values;
    }

    /// <summary>This process's cgroup v2 memory.max and memory.current, when it has a limit.</summary>
    private static (long Max, long Current)? CgroupLimit()
    {
        try
        {
            // "0::/some/path" is the unified (v2) hierarchy.
            var line = File.ReadLines("/proc/self/cgroup").FirstOrDefault(l => l.StartsWith("0::", StringComparison.Ordinal));
            if (line is null)
            {
                return null;
            }

            var folder = Path.Combine("/sys/fs/cgroup", line[3..].TrimStart('/'));
            var max = File.ReadAllText(Path.Combine(folder, "memory.max")).Trim();
            var current = File.ReadAllText(Path.Combine(folder, "memory.current")).Trim();
            return max == "max" ? null : (long.Parse(max, CultureInfo.InvariantCulture), long.Parse(current, CultureInfo.InvariantCulture));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    private static long Allocated(string path)
    {
        // statx's layout is the same on every architecture (unlike stat's): stx_blocks, in 512-byte units, at offset 48.
        Span<byte> buffer = stackalloc byte[256];
        return Statx(AtFdCwd, path, 0, StatxBlocks, ref MemoryMarshal.GetReference(buffer)) == 0
            ? BitConverter.ToInt64(buffer[48..]) * 512
            : new FileInfo(path).Length;
    }

    private const int AtFdCwd = -100;
    private const uint StatxBlocks = 0x400;

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int directoryFd, string path, int flags, uint mask, ref byte buffer);
}
