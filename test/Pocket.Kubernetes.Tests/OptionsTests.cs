using Microsoft.Extensions.Logging.Abstractions;
using Pocket.Protocol;

namespace Pocket.Kubernetes.Tests;

/// <summary>Bad settings fail at start-up, naming the setting, before anything reaches a cluster.</summary>
public sealed class OptionsTests
{
    private static KubernetesProvisionerOptions Valid() => new()
    {
        Namespace = "pocket",
        Image = "pocket:latest",
        MetadataAddress = "pocket-metadata:7070",
    };

    [Fact]
    public void DefaultsAreValid()
    {
        Valid().Validate();
        Assert.Equal([NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd], new[] { NodeTier.Dram, NodeTier.Ssd, NodeTier.Hdd }.Where(t => Valid().ForTier(t).Enabled));
    }

    public static TheoryData<string, KubernetesProvisionerOptions> BadOptions() => new()
    {
        { "namespace", Valid() with { Namespace = null } },
        { "namespace", Valid() with { Namespace = "Pocket" } },
        { "namespace", Valid() with { Namespace = new string('a', 64) } },
        { "image", Valid() with { Image = " " } },
        { "image pull policy", Valid() with { ImagePullPolicy = "Sometimes" } },
        { "command", Valid() with { Command = [] } },
        { "metadata address", Valid() with { MetadataAddress = "pocket-metadata" } },
        { "metadata address", Valid() with { MetadataAddress = "pocket-metadata:70700" } },
        { "cluster token secret", Valid() with { ClusterTokenSecretName = "Pocket_Token" } },
        { "secret key", Valid() with { ClusterTokenSecretKey = "to/ken" } },
        { "pod name prefix", Valid() with { PodNamePrefix = new string('p', 50) } },
        { "pod name prefix", Valid() with { PodNamePrefix = "-pocket" } },
        { "storage port", Valid() with { StoragePort = 0 } },
        { "block size", Valid() with { BlockSize = 3000 } },
        { "data path", Valid() with { DataPath = "data" } },
        { "labels", Valid() with { Labels = new Dictionary<string, string> { ["bad key!"] = "x" } } },
        { "labels", Valid() with { Labels = new Dictionary<string, string> { ["team"] = "no spaces" } } },
        { "node selector", Valid() with { NodeSelector = new Dictionary<string, string> { ["Example.COM/disk"] = "ssd" } } },
        { "cpu request", Valid() with { Dram = new TierPodOptions { CpuRequest = "lots" } } },
        { "cpu limit", Valid() with { Ssd = new TierPodOptions { CpuLimit = "2 cores" } } },
        { "overheads", Valid() with { Hdd = new TierPodOptions { DiskOverheadBytes = -1 } } },
        { "storage class", Valid() with { Hdd = new TierPodOptions { StorageClassName = "Fast Disks" } } },
        { "at least one tier", Valid() with { Dram = new TierPodOptions { Enabled = false }, Ssd = new TierPodOptions { Enabled = false }, Hdd = new TierPodOptions { Enabled = false } } },
        { "grace period", Valid() with { DeleteGracePeriod = TimeSpan.FromSeconds(-1) } },
        { "grace period", Valid() with { DeleteGracePeriod = TimeSpan.FromDays(30) } },
        { "start timeout", Valid() with { StartTimeout = TimeSpan.Zero } },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void BadSettingsAreRefusedByName(string setting, KubernetesProvisionerOptions options)
    {
        var error = Assert.ThrowsAny<ArgumentException>(options.Validate);
        Assert.Contains(setting, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheProvisionerValidatesItsOptions()
    {
        using var client = new k8s.Kubernetes(new k8s.KubernetesClientConfiguration { Host = "http://127.0.0.1:1" });
        Assert.ThrowsAny<ArgumentException>(() => new KubernetesProvisioner(Valid() with { Namespace = "Not_A_Namespace" }, client, NullLoggerFactory.Instance));
    }

    [Fact]
    public void LabelsWithAPrefixAndEmptyValuesAreAccepted()
    {
        (Valid() with
        {
            Labels = new Dictionary<string, string> { ["example.com/team"] = "data-eng", ["canary"] = string.Empty },
            NodeSelector = new Dictionary<string, string> { ["node.kubernetes.io/instance-type"] = "r5.2xlarge" },
            PodNamePrefix = new string('p', 49),
        }).Validate();
    }

    [Theory]
    [InlineData(1L << 30, "1Gi")]
    [InlineData(1280L << 20, "1280Mi")]
    [InlineData(2L << 40, "2Ti")]
    [InlineData(4096, "4Ki")]
    [InlineData(1001, "1001")]
    public void ByteQuantitiesUseTheLargestExactBinaryUnit(long bytes, string expected)
    {
        var quantity = StoragePodSpec.Quantity(bytes);
        Assert.Equal(expected, quantity.ToString());
        Assert.Equal(bytes, quantity.ToInt64());
    }
}
