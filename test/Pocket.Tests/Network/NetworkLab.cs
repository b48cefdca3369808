using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Tests.Network;

/// <summary>
/// A small network of Linux network namespaces for fault tests: one bridge in the test's own namespace (which the test's
/// clients use, at <see cref="GatewayAddress"/>), and one namespace per host, each joined to the bridge by a veth pair
/// (or a <see cref="SlowLink"/>) and given its own address. Roles run in them as real <c>pocket metadata</c> and
/// <c>pocket storage</c> children (<c>ip netns exec</c>). Links can be cut, restored, and routes between hosts blocked.
/// Names carry this process's id and a random part, so parallel runs never collide, and a lab left behind by a killed
/// run is swept by the next one. Disposing stops the children and deletes every namespace and link.
/// </summary>
internal sealed partial class NetworkLab : IAsyncDisposable
{
    private const string NamespacePrefix = "pocketlab-";
    private readonly List<NetworkHost> _hosts = [];
    private readonly List<LabProcess> _processes = [];
    private readonly List<SlowLink> _slowLinks = [];
    private readonly string _id;
    private readonly string _subnet;
    private bool _disposed;

    private NetworkLab(string id, string subnet)
    {
        _id = id;
        _subnet = subnet;
        GatewayAddress = subnet + "1";
    }

    /// <summary>The bridge's address in the test's namespace: where clients of the test connect from.</summary>
    public string GatewayAddress { get; }

    /// <summary>The slow links made so far, for their counts of frames.</summary>
    public IReadOnlyList<SlowLink> SlowLinks => _slowLinks;

    private string Bridge => $"pl{_id}br";

    /// <summary>
    /// Why a lab cannot be made here (not Linux, not root, no <c>ip</c>, namespaces refused), or null when it can.
    /// CI runs as root with iproute2 installed by test.sh, so there the fault suite always runs.
    /// </summary>
    public static string? Unavailable { get; } = Probe();

    /// <summary>Makes the bridge; the test is skipped (with the reason) where namespaces cannot be made.</summary>
    public static NetworkLab Create()
    {
        Skip.If(Unavailable is not null, Unavailable);
        SweepAbandoned();
        var id = Convert.ToHexString(Guid.NewGuid().ToByteArray())[..5].ToLowerInvariant();
        var lab = new NetworkLab(id, FreeSubnet());
        try
        {
            Ip("link", "add", lab.Bridge, "type", "bridge");
            Ip("addr", "add", lab.GatewayAddress + "/24", "dev", lab.Bridge);
            Ip("link", "set", lab.Bridge, "up");
        }
        catch
        {
            lab.DeleteNetwork();
            throw;
        }

        return lab;
    }

    /// <summary>A new namespace joined to the bridge by a veth pair, at the next free address.</summary>
    public NetworkHost AddHost(string role) =>
        AddHost(role, host => Ip("link", "add", host.Link, "type", "veth", "peer", "name", host.InnerLink));

    /// <summary>
    /// A new namespace joined to the bridge through a <see cref="SlowLink"/> (two TAP devices and this process between
    /// them) that delays every frame by <paramref name="delay"/> and drops the share <paramref name="loss"/>, both ways.
    /// </summary>
    public NetworkHost AddSlowHost(string role, TimeSpan delay, double loss)
    {
        SlowLink? link = null;
        var host = AddHost(role, host =>
        {
            link = SlowLink.Open(host.Link, host.InnerLink, delay, loss);
            _slowLinks.Add(link);
        });
        link!.Start();
        return host;
    }

    /// <summary>Makes the namespace, lets <paramref name="makeLink"/> create the host's link pair, then wires it up.</summary>
    private NetworkHost AddHost(string role, Action<NetworkHost> makeLink)
    {
        var index = _hosts.Count;
        var host = new NetworkHost(
            role,
            $"{NamespacePrefix}{Environment.ProcessId}-{_id}-{index}",
            $"{_subnet}{index + 2}",
            $"pl{_id}h{index}",
            $"pl{_id}n{index}");
        _hosts.Add(host);
        Ip("netns", "add", host.Namespace);
        Ip("-n", host.Namespace, "link", "set", "lo", "up");
        makeLink(host);
        Ip("link", "set", host.InnerLink, "netns", host.Namespace);
        Ip("-n", host.Namespace, "addr", "add", host.Address + "/24", "dev", host.InnerLink);
        Ip("-n", host.Namespace, "link", "set", host.InnerLink, "up");
        Ip("link", "set", host.Link, "master", Bridge);
        Ip("link", "set", host.Link, "up");
        return host;
    }

    /// <summary>Takes the host's link down: nothing reaches it or leaves it, and nobody is told (no reset, no FIN).</summary>
    public void Cut(NetworkHost host) => Ip("link", "set", host.Link, "down");

    /// <summary>Brings the host's link back up.</summary>
    public void Restore(NetworkHost host) => Ip("link", "set", host.Link, "up");

    /// <summary>
    /// <paramref name="from"/> can no longer send to <paramref name="to"/> (its packets to that address are dropped), while
    /// every other path, including <paramref name="to"/>'s own packets to <paramref name="from"/>, stays up.
    /// </summary>
    public void Block(NetworkHost from, NetworkHost to) => Ip("-n", from.Namespace, "route", "add", "blackhole", to.Address + "/32");

    /// <summary>Undoes <see cref="Block"/>.</summary>
    public void Unblock(NetworkHost from, NetworkHost to) => Ip("-n", from.Namespace, "route", "del", "blackhole", to.Address + "/32");

    /// <summary>
    /// Starts <c>pocket metadata</c> in <paramref name="host"/> and waits for its ready line; returns its address.
    /// </summary>
    public async Task<LabProcess> StartMetadataAsync(NetworkHost host, JobToken clusterToken, TimeSpan suspectAfter, TimeSpan nodeTimeout, (int Offset, int Stride)? jobNumbers = null)
    {
        List<string> arguments = [.. RoleCommandLine.Metadata(new MetadataRoleArguments(host.Address, 0) { StopOnStdinEof = true, JobNumbers = jobNumbers })];
        arguments.AddRange(["--suspect-after", Seconds(suspectAfter), "--node-timeout", Seconds(nodeTimeout)]);
        var process = Start(host, clusterToken, arguments);
        var line = await process.WaitForLineAsync(l => l.StartsWith(RoleCommandLine.MetadataReadyPrefix, StringComparison.Ordinal));
        process.Address = line[RoleCommandLine.MetadataReadyPrefix.Length..].Split(' ')[0];
        return process;
    }

    /// <summary>Starts a dram <c>pocket storage</c> in <paramref name="host"/> and waits until it has registered.</summary>
    public async Task<LabProcess> StartStorageAsync(NetworkHost host, JobToken clusterToken, string metadataAddress, long capacity)
    {
        var arguments = RoleCommandLine.Storage(new StorageRoleArguments(metadataAddress, NodeTier.Dram, capacity) { StopOnStdinEof = true, Host = host.Address });
        var process = Start(host, clusterToken, arguments);
        var line = await process.WaitForLineAsync(l => l.StartsWith(RoleCommandLine.StorageReadyPrefix, StringComparison.Ordinal));
        Assert.True(RoleCommandLine.TryParseStorageReady(line, out var nodeId, out var address), line);
        process.NodeId = nodeId;
        process.Address = address;
        return process;
    }

    private LabProcess Start(NetworkHost host, JobToken clusterToken, IEnumerable<string> arguments)
    {
        var (file, prefix) = PocketExecutable.Value;
        var start = new ProcessStartInfo("ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };

        // `ip netns exec` execs the program in place: the child's pid is the role's pid (SIGSTOP reaches the role).
        foreach (var argument in (string[])["netns", "exec", host.Namespace, file, .. prefix, .. arguments])
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("POCKET_", StringComparison.Ordinal)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["POCKET_CLUSTER_TOKEN"] = clusterToken.ToString();
        start.Environment["POCKET_HOME"] = Path.Combine(Path.GetTempPath(), $"pocketlab-home-{_id}");
        var process = new LabProcess(Process.Start(start)!, $"{host.Role} ({host.Address})");
        _processes.Add(process);
        return process;
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var process in _processes)
        {
            await process.DisposeAsync();
        }

        foreach (var link in _slowLinks)
        {
            link.Dispose();
        }

        DeleteNetwork();
        try
        {
            Directory.Delete(Path.Combine(Path.GetTempPath(), $"pocketlab-home-{_id}"), recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private void DeleteNetwork()
    {
        foreach (var host in _hosts)
        {
            TryIp("netns", "del", host.Namespace);
            TryIp("link", "del", host.Link);
        }

        TryIp("link", "del", Bridge);
    }

    private static string Seconds(TimeSpan span) => span.TotalSeconds.ToString(CultureInfo.InvariantCulture) + "s";

    /// <summary>A 10.x.y.0/24 that no address or route of this machine uses yet (with the trailing dot).</summary>
    private static string FreeSubnet()
    {
        var used = Ip("-4", "route", "show", "table", "all") + Ip("-4", "addr", "show");
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var subnet = $"10.{Random.Shared.Next(200, 250)}.{Random.Shared.Next(0, 256)}.";
            if (!used.Contains(subnet, StringComparison.Ordinal))
            {
                return subnet;
            }
        }

        throw new InvalidOperationException("no free 10.x.y.0/24 subnet for the network lab");
    }

    /// <summary>Deletes namespaces (and their bridges) left by a test process that is gone, e.g. killed by a hang timeout.</summary>
    private static void SweepAbandoned()
    {
        foreach (var line in Ip("netns", "list").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var name = line.Split(' ')[0];
            var parts = name.StartsWith(NamespacePrefix, StringComparison.Ordinal) ? name[NamespacePrefix.Length..].Split('-') : [];
            if (parts.Length != 3 || !int.TryParse(parts[0], CultureInfo.InvariantCulture, out var pid) || File.Exists($"/proc/{pid}/stat"))
            {
                continue;
            }

            foreach (var orphan in Ip("netns", "pids", name).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                if (int.TryParse(orphan, CultureInfo.InvariantCulture, out var orphanPid))
                {
                    _ = Kill(orphanPid, 9);
                }
            }

            TryIp("netns", "del", name);
            TryIp("link", "del", $"pl{parts[1]}h{parts[2]}");
            TryIp("link", "del", $"pl{parts[1]}br");
        }
    }

    private static string? Probe()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "network namespaces need Linux";
        }

        if (GetEuid() != 0)
        {
            return "network namespaces need root (CI runs as root); run the tests as root to include the network fault suite";
        }

        try
        {
            Ip("-V");
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"no usable `ip` (iproute2; test.sh installs it): {ex.Message}";
        }

        var probe = $"{NamespacePrefix}probe-{Environment.ProcessId}";
        try
        {
            Ip("netns", "add", probe);
            return null;
        }
        catch (InvalidOperationException ex)
        {
            return $"this machine refuses network namespaces: {ex.Message}";
        }
        finally
        {
            TryIp("netns", "del", probe);
        }
    }

    /// <summary>Runs <c>ip</c>; fails with its error output when it fails.</summary>
    internal static string Ip(params string[] arguments)
    {
        var start = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(30_000))
        {
            process.Kill();
            throw new InvalidOperationException($"ip {string.Join(' ', arguments)} did not finish within 30 s");
        }

        return process.ExitCode == 0
            ? stdout.Result
            : throw new InvalidOperationException($"ip {string.Join(' ', arguments)}: exit {process.ExitCode}: {stderr.Trim()}");
    }

    private static void TryIp(params string[] arguments)
    {
        try
        {
            Ip(arguments);
        }
        catch (InvalidOperationException)
        {
            // Already gone (or never made): cleanup goes on with the rest.
        }
    }

    private static readonly Lazy<(string File, string[] Prefix)> PocketExecutable = new(() =>
    {
        // The project reference builds the CLI and copies it beside the tests.
        var apphost = Path.Combine(AppContext.BaseDirectory, "pocket");
        if (File.Exists(apphost))
        {
            return (apphost, []);
        }

        var dll = Path.Combine(AppContext.BaseDirectory, "pocket.dll");
        Assert.True(File.Exists(dll), $"no pocket executable in {AppContext.BaseDirectory}");
        return (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [dll]);
    });

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    internal static partial int Kill(int pid, int signal);
}

/// <summary>One namespace of a <see cref="NetworkLab"/>: its role, address and the link that joins it to the bridge.</summary>
/// <param name="Role">What runs there, for messages.</param>
/// <param name="Namespace">The network namespace's name.</param>
/// <param name="Address">Its IPv4 address.</param>
/// <param name="Link">The bridge-side end of its link (in the test's namespace): cutting it isolates the host.</param>
/// <param name="InnerLink">The end inside the namespace.</param>
internal sealed record NetworkHost(string Role, string Namespace, string Address, string Link, string InnerLink);

/// <summary>A role running in a lab namespace: its output read line by line; disposing kills it.</summary>
internal sealed class LabProcess : IAsyncDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);
    private readonly Process _process;
    private readonly string _name;
    private readonly Channel<string> _lines = Channel.CreateUnbounded<string>();
    private readonly StringBuilder _output = new();

    public LabProcess(Process process, string name)
    {
        _process = process;
        _name = name;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                _lines.Writer.TryComplete();
                return;
            }

            Append(e.Data);
            _lines.Writer.TryWrite(e.Data);
        };
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Pid => _process.Id;

    /// <summary>The address it serves at (host:port), from its ready line.</summary>
    public string Address { get; set; } = string.Empty;

    /// <summary>A storage node's id from its ready line.</summary>
    public uint NodeId { get; set; }

    public bool HasExited => _process.HasExited;

    /// <summary>Everything it printed so far, for failure messages.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    public async Task<string> WaitForLineAsync(Func<string, bool> match)
    {
        using var timeout = new CancellationTokenSource(Patience);
        try
        {
            await foreach (var line in _lines.Reader.ReadAllAsync(timeout.Token))
            {
                if (match(line))
                {
                    return line;
                }
            }
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"{_name} printed no such line within {Patience.TotalSeconds} s:\n{Output}");
        }

        Assert.Fail($"{_name} ended before printing the line:\n{Output}");
        return string.Empty;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                // A stopped process ignores everything but SIGKILL; resume it anyway so nothing is left frozen.
                _ = NetworkLab.Kill(_process.Id, 18);
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }
        catch (InvalidOperationException)
        {
        }

        _process.Dispose();
    }
}
