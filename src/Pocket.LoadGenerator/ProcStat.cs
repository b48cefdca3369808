using System.Globalization;
using System.Net;

namespace Pocket.LoadGenerator;

/// <summary>CPU time and resident memory of processes on this machine, from /proc (Linux only; null elsewhere).</summary>
internal static class ProcStat
{
    /// <summary>USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux architecture .NET runs on.</summary>
    private const double TicksPerSecond = 100;

    /// <summary>user + system CPU seconds of every process, or null if any of them cannot be read.</summary>
    public static double? CpuSeconds(IEnumerable<int> pids)
    {
        double total = 0;
        foreach (var pid in pids)
        {
            if (CpuSeconds(pid) is not { } seconds)
            {
                return null;
            }

            total += seconds;
        }

        return total;
    }

    public static double? CpuSeconds(int pid)
    {
        // Fields after the command name, which sits in parentheses and may hold spaces: utime and stime are the
        // 14th and 15th fields of the line, the 12th and 13th after the closing parenthesis.
        var fields = StatFields(pid);
        return fields is null ? null : (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
    }

    /// <summary>
    /// Resident bytes of the process' mapping that is exactly <paramref name="length"/> bytes long (a DRAM node's
    /// device), from /proc/PID/smaps; without such a mapping, the whole process' resident bytes (statm); -1 when unknown.
    /// </summary>
    public static long MappingResidentBytes(int pid, long length)
    {
        try
        {
            var inMapping = false;
            foreach (var line in File.ReadLines($"/proc/{pid}/smaps"))
            {
                // A mapping starts with "start-end perms ..."; its fields ("Rss:   1234 kB") follow.
                var dash = line.IndexOf('-', StringComparison.Ordinal);
                var space = line.IndexOf(' ', StringComparison.Ordinal);
                if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var start)
                    && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var end))
                {
                    inMapping = end - start == length;
                }
                else if (inMapping && line.StartsWith("Rss:", StringComparison.Ordinal))
                {
                    return long.Parse(line.AsSpan(4).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
                }
            }

            var statm = File.ReadAllText($"/proc/{pid}/statm").Split(' ');
            return long.Parse(statm[1], CultureInfo.InvariantCulture) * Environment.SystemPageSize;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }

    /// <summary>The process that holds the listening TCP socket of <paramref name="endPoint"/>'s port on this machine; null when unknown.</summary>
    public static int? ListenerPid(string host, int port) => IsLoopback(host) ? ListenerPid(port) : null;

    public static bool IsLoopback(string host) =>
        host.Equals("localhost", StringComparison.OrdinalIgnoreCase) || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));

    private static string[]? StatFields(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 12 ? fields : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static int? ListenerPid(int port)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        try
        {
            var inodes = new HashSet<string>(StringComparer.Ordinal);
            var portHex = port.ToString("X4", CultureInfo.InvariantCulture);
            foreach (var table in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
            {
                if (!File.Exists(table))
                {
                    continue;
                }

                foreach (var line in File.ReadLines(table).Skip(1))
                {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...; st 0A is LISTEN.
                    var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (f.Length > 9 && f[3] == "0A" && f[1].EndsWith(":" + portHex, StringComparison.Ordinal))
                    {
                        inodes.Add($"socket:[{f[9]}]");
                    }
                }
            }

            if (inodes.Count == 0)
            {
                return null;
            }

            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                {
                    continue;
                }

                try
                {
                    foreach (var fd in Directory.EnumerateFileSystemEntries(Path.Combine(dir, "fd")))
                    {
                        if (new FileInfo(fd).LinkTarget is { } target && inodes.Contains(target))
                        {
                            return pid;
                        }
                    }
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // A process that ended, or one we may not look into.
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return null;
    }
}
