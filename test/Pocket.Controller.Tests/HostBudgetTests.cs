using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>
/// The local provisioner checks the host before every node: the arithmetic on hosts of known size, and the real host
/// (this machine, read from /proc and the file system) refusing nodes it cannot hold before any process starts.
/// </summary>
public sealed class HostBudgetTests
{
    private const long MiB = 1L << 20;
    private const long GiB = 1L << 30;

    /// <summary>A host of given size; processes' resident and allocated bytes by process id.</summary>
    private sealed class SizedHost(HostResources resources) : IHostProbe
    {
        public Dictionary<int, long> Resident { get; } = [];

        public Dictionary<int, long> Allocated { get; } = [];

        public HostResources Read(string? directory) => resources;

        public long ResidentBytes(int processId) => Resident.GetValueOrDefault(processId);

        public long AllocatedBytes(string directory, int processId) => Allocated.GetValueOrDefault(processId);
    }

    [Fact]
    public void ADramNodeFitsWhenItsCapacityAndOverheadFitBesideTheReserve()
    {
        // 8 GiB host, 4 GiB available; reserve max(1 GiB, 10 %) = 1 GiB; a node costs its capacity + 128 MiB.
        var budget = new HostBudget(new HostBudgetOptions(), new SizedHost(new(8 * GiB, 4 * GiB, 0, 0)), dataDirectory: null);

        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Dram, 2 * GiB), []));
        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Dram, 3 * GiB - 128 * MiB), []));
        var refusal = budget.Refusal(new NodeRequest(NodeTier.Dram, 3 * GiB), []);

        Assert.NotNull(refusal);
        Assert.Contains("not enough memory on this host for a dram node of 3 GiB", refusal, StringComparison.Ordinal);
        Assert.Contains("of the 4 GiB available", refusal, StringComparison.Ordinal);
        Assert.Contains("1 GiB is kept", refusal, StringComparison.Ordinal);
    }

    [Fact]
    public void RunningNodesCountAtWhatTheyWerePromisedLessWhatTheyAlreadyHold()
    {
        var host = new SizedHost(new(8 * GiB, 4 * GiB, 0, 0));
        host.Resident[4242] = 512 * MiB;
        var budget = new HostBudget(new HostBudgetOptions(), host, dataDirectory: null);
        RunningNode[] running = [new(NodeTier.Dram, 2 * GiB, 4242)];

        // Promised 2 GiB + 128 MiB, holding 512 MiB of it already: 1.625 GiB still to come out of the 4 available.
        var report = budget.Report(running);
        Assert.Equal(2 * GiB + 128 * MiB - 512 * MiB, report.MemoryPromisedBytes);
        Assert.Equal(4 * GiB - report.MemoryPromisedBytes - GiB, report.MemoryLeftBytes);

        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Dram, GiB), running));
        var refusal = budget.Refusal(new NodeRequest(NodeTier.Dram, 2 * GiB), running);
        Assert.Contains("promised to 1 running node(s)", refusal, StringComparison.Ordinal);

        // A node still starting (no process yet) holds nothing: its whole promise counts.
        RunningNode[] starting = [new(NodeTier.Dram, 2 * GiB, ProcessId: 0)];
        Assert.Equal(2 * GiB + 128 * MiB, budget.Report(starting).MemoryPromisedBytes);
    }

    [Fact]
    public void SsdAndHddNodesAreCheckedAgainstTheDataDirectorysFreeSpace()
    {
        // 100 GiB file system, 10 GiB free; reserve max(1 GiB, 5 %) = 5 GiB.
        var host = new SizedHost(new(64 * GiB, 32 * GiB, 100 * GiB, 10 * GiB));
        var budget = new HostBudget(new HostBudgetOptions(), host, dataDirectory: "/data");

        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Ssd, 5 * GiB), []));
        Assert.Contains("not enough disk in /data for an ssd node of 6 GiB", budget.Refusal(new NodeRequest(NodeTier.Ssd, 6 * GiB), []), StringComparison.Ordinal);

        // A running hdd node of 8 GiB whose sparse file holds 6 GiB already: 2 GiB more may come, leaving 3 GiB.
        host.Allocated[77] = 6 * GiB;
        RunningNode[] running = [new(NodeTier.Hdd, 8 * GiB, 77)];
        Assert.Equal(2 * GiB, budget.Report(running).DiskPromisedBytes);
        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Ssd, 3 * GiB), running));
        Assert.NotNull(budget.Refusal(new NodeRequest(NodeTier.Ssd, 3 * GiB + 1), running));

        // A dram node needs no disk, only memory.
        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Dram, 16 * GiB), running));
    }

    [Fact]
    public void ExplicitReservesReplaceTheDefaults()
    {
        var host = new SizedHost(new(8 * GiB, 4 * GiB, 100 * GiB, 10 * GiB));
        var budget = new HostBudget(new HostBudgetOptions { MemoryReserveBytes = 0, DiskReserveBytes = 0, NodeOverheadBytes = 0 }, host, "/data");

        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Dram, 4 * GiB), []));
        Assert.NotNull(budget.Refusal(new NodeRequest(NodeTier.Dram, 4 * GiB + 1), []));
        Assert.Null(budget.Refusal(new NodeRequest(NodeTier.Hdd, 10 * GiB), []));
    }

    [Fact]
    public async Task TheRealHostRefusesANodeItCannotHoldBeforeAnyProcessStarts()
    {
        var directory = Directory.CreateTempSubdirectory("pocket-budget-");
        try
        {
            var real = LinuxHostProbe.Instance.Read(directory.FullName);
            Assert.True(real.MemoryTotalBytes > 0 && real.MemoryAvailableBytes > 0, $"memory not read: {real}");
            Assert.True(real.DiskTotalBytes > 0, $"disk not read: {real}");
            await using var provisioner = new LocalProcessProvisioner(
                new LocalProcessProvisionerOptions { Executable = "/nonexistent/pocket", MetadataAddress = "127.0.0.1:1", DataDirectory = directory.FullName },
                NullLoggerFactory.Instance);

            // Twice the host's memory, twice its disk: refused with the reason, and no program was even looked for.
            var memory = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 2 * real.MemoryTotalBytes), CancellationToken.None));
            Assert.StartsWith("not enough memory on this host for a dram node", memory.Message, StringComparison.Ordinal);
            var disk = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Ssd, 2 * real.DiskTotalBytes), CancellationToken.None));
            Assert.StartsWith($"not enough disk in {directory.FullName} for an ssd node", disk.Message, StringComparison.Ordinal);
            Assert.Equal(0, provisioner.Running);

            var budget = provisioner.Budget;
            Assert.NotNull(budget);
            Assert.Equal(0, budget.MemoryPromisedBytes);
            Assert.True(budget.MemoryLeftBytes < real.MemoryAvailableBytes);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task NodesStartingTogetherEachCountTheOthers()
    {
        // Room for one 2 GiB node. The first start holds its reservation while its process runs (a shell that never
        // says it is ready); a second start meanwhile is refused; once the first gives up, the room is back.
        var host = new SizedHost(new(8 * GiB, 4 * GiB, 0, 0));
        await using var provisioner = new LocalProcessProvisioner(
            new LocalProcessProvisionerOptions { Executable = "/bin/sh", BaseArguments = ["-c", "exec sleep 60"], MetadataAddress = "127.0.0.1:1", StartTimeout = TimeSpan.FromMinutes(2) },
            NullLoggerFactory.Instance,
            host);
        using var first = new CancellationTokenSource();
        var starting = provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 2 * GiB), first.Token);

        var second = await Assert.ThrowsAsync<ProvisioningException>(() => provisioner.StartNodeAsync(new NodeRequest(NodeTier.Dram, 2 * GiB), CancellationToken.None));
        Assert.Contains("promised to 1 running node(s)", second.Message, StringComparison.Ordinal);

        await first.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => starting);
        Assert.Equal(0, provisioner.Budget!.MemoryPromisedBytes);
    }

    [Fact]
    public void TheProbeCountsTheBlocksOfANodesOpenFileAndNotThePunchedOnes()
    {
        var directory = Directory.CreateTempSubdirectory("pocket-budget-");
        try
        {
            // A file device removes its file's name once open, as a storage node's does: the probe still finds it.
            using (var device = new Pocket.Storage.FileDevice("ssd", directory.FullName, 16 << 20))
            {
                Assert.Empty(Directory.GetFiles(directory.FullName));
                device.Write(0, new byte[8 << 20].Select((_, i) => (byte)(i | 1)).ToArray());
                var written = LinuxHostProbe.Instance.AllocatedBytes(directory.FullName, Environment.ProcessId);
                Assert.True(written >= 8 << 20, $"{written} bytes found for 8 MiB written");

                // Deleted blocks are punched out of the file, and the budget sees the space come back.
                Assert.True(device.Discard(0, 6 << 20));
                var punched = LinuxHostProbe.Instance.AllocatedBytes(directory.FullName, Environment.ProcessId);
                Assert.True(written - punched >= 6 << 20, $"{written} -> {punched} bytes after punching 6 MiB");
                Assert.Equal(0, LinuxHostProbe.Instance.AllocatedBytes(directory.FullName, Environment.ProcessId + 1_000_000));
            }

            Assert.Equal(0, LinuxHostProbe.Instance.AllocatedBytes(directory.FullName, Environment.ProcessId));
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }
}
