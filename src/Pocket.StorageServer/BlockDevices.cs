using Pocket.Protocol;
using Pocket.Storage;

namespace Pocket.StorageServer;

/// <summary>How <see cref="BlockDevices.Create"/> builds each tier's device.</summary>
public sealed record TierDeviceOptions
{
    /// <summary>Where ssd and hdd devices make their files (default: pocket-data in the temp directory).</summary>
    public string? Directory { get; init; }

    /// <summary>
    /// Fault the DRAM tier's whole capacity in up front, in the background, so an empty node holds its capacity (how
    /// nodes worked before memory followed use; for comparisons). Off: the node's <see cref="Pocket.Storage.SpaceReclaimer"/>
    /// keeps a headroom faulted in (<see cref="StorageServerOptions.DramHeadroom"/>).
    /// </summary>
    public bool PreTouchMemory { get; init; }

    /// <summary>Concurrent I/Os an ssd device takes: deep, so flash's internal parallelism is used.</summary>
    public int SsdQueueDepth { get; init; } = 64;

    /// <summary>Concurrent I/Os an hdd device takes: shallow, so a few large sequential streams are not interleaved.</summary>
    public int HddQueueDepth { get; init; } = 2;

    /// <summary>Bypass the page cache on ssd devices (O_DIRECT) where the file system allows it.</summary>
    public bool SsdUnbuffered { get; init; } = true;

    /// <summary>Bypass the page cache on hdd devices; off by default, so the kernel's read-ahead serves large sequential extents.</summary>
    public bool HddUnbuffered { get; init; }
}

/// <summary>The one place each tier's device is made: every role, test cluster and benchmark asks here.</summary>
public static class BlockDevices
{
    /// <summary>The default directory for ssd and hdd files.</summary>
    public static string DefaultDirectory => Path.Combine(Path.GetTempPath(), "pocket-data");

    /// <summary>
    /// The device of a node of <paramref name="tier"/>: native memory for dram; for ssd an unbuffered (where
    /// allowed), aligned file device behind a deep queue; for hdd a file device with sequential read-ahead behind a
    /// shallow queue.
    /// </summary>
    public static IBlockDevice Create(NodeTier tier, long capacity, TierDeviceOptions? options = null)
    {
        options ??= new TierDeviceOptions();
        var directory = options.Directory ?? DefaultDirectory;
        return tier switch
        {
            NodeTier.Dram => new NativeMemoryDevice(capacity, options.PreTouchMemory),
            NodeTier.Ssd => new QueuedDevice(
                new FileDevice(new FileDeviceOptions { Kind = "ssd", Directory = directory, Capacity = capacity, Unbuffered = options.SsdUnbuffered }),
                options.SsdQueueDepth),
            NodeTier.Hdd => new QueuedDevice(
                new FileDevice(new FileDeviceOptions { Kind = "hdd", Directory = directory, Capacity = capacity, Unbuffered = options.HddUnbuffered, SequentialHint = true }),
                options.HddQueueDepth),
            _ => throw new ArgumentOutOfRangeException(nameof(tier), $"no device for tier {tier}"),
        };
    }

    /// <summary>
    /// Allocation unit that suits a tier: 64 KiB for memory and flash (little waste per object, still large
    /// transfers); 1 MiB for disks, so an object's blocks form long contiguous runs a disk reads sequentially.
    /// </summary>
    public static int DefaultBlockSize(NodeTier tier) => tier == NodeTier.Hdd ? 1 << 20 : 64 << 10;
}
