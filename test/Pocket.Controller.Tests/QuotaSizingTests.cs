using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Pocket.Client;
using Pocket.Controller.Contracts;
using Pocket.Controller.Sizing;
using Pocket.Protocol;

namespace Pocket.Controller.Tests;

/// <summary>
/// Quotas from the controller's sizing: what hints turn into, the default for a job without hints, explicit limits,
/// and that the metadata server enforces what the controller sent (a real cluster and controller on loopback).
/// </summary>
public sealed class QuotaSizingTests
{
    private const long MB = 1_000_000;

    private static readonly NodeTier[] Dram = [NodeTier.Dram];

    [Fact]
    public void HintsTurnIntoQuotasWithTheDocumentedAllowance()
    {
        var sizer = new JobSizer(ControllerHarness.Sizing());

        // Sized for 20 MB: 25 MB of data; objects by 1 KiB each (at least 100,000); 256 key bytes per object.
        var hints = new JobHints { CapacityBytes = 20 * MB };
        Assert.Equal(new JobQuota(25 * MB, 100_000, 25_600_000), sizer.QuotaFor(sizer.Size(hints, Dram), hints));

        var large = new JobHints { CapacityBytes = 200 * MB };
        Assert.Equal(new JobQuota(250 * MB, 244_141, 244_141 * 256), sizer.QuotaFor(sizer.Size(large, Dram), large));

        // No hints: one node of the class (256 MiB here), not the small share the sizing places it on.
        Assert.Equal(new JobQuota(256L << 20, 262_144, 262_144 * 256), sizer.QuotaFor(sizer.Size(JobHints.None, Dram), JobHints.None));
        var configured = new JobSizer(ControllerHarness.Sizing() with { DefaultJobMaxBytes = 10 * MB });
        Assert.Equal(10 * MB, configured.QuotaFor(configured.Size(JobHints.None, Dram), JobHints.None).MaxBytes);

        // Limits given with the hints win; 0 is no limit.
        var explicitLimits = hints with { MaxCapacityBytes = 0, MaxObjects = 7, MaxKeyBytes = 99 };
        Assert.Equal(new JobQuota(0, 7, 99), sizer.QuotaFor(sizer.Size(explicitLimits, Dram), explicitLimits));
    }

    [Fact]
    public void LimitsParseFromTheHintsHeaderAndNegativeOnesAreRefused()
    {
        Assert.True(JobHints.TryParse("capacity=1GiB,max-capacity=2GiB,max-objects=10,max-key-bytes=1KiB", out var hints, out var error), error);
        Assert.Equal((2L << 30, 10L, 1024L), (hints.MaxCapacityBytes, hints.MaxObjects, hints.MaxKeyBytes));
        Assert.False(JobHints.TryParse("max-objects=-1", out _, out error));
        Assert.Contains("max-objects", error, StringComparison.Ordinal);
        Assert.Equal("maxObjects", Assert.Throws<ArgumentException>(() => new JobHints { MaxObjects = -1 }.Validate()).ParamName);
        Assert.Throws<ArgumentException>(() => new SizingOptions { QuotaAllowance = 0.5 }.Validate());
    }

    [Fact]
    public async Task AJobSizedFor2MBStoresAbout2MBAndOtherJobsKeepTheirRoom()
    {
        // Regression (bounded): a job sized for 20 MB stored 512 MiB, and another job's 1 MiB put then failed.
        await using var h = await ControllerHarness.StartAsync();
        var small = await h.RegisterAsync(new { name = "small", capacity = 2 * MB });
        Assert.Equal(new JobQuota(2_500_000, 100_000, 25_600_000), small.Quota);
        var job = h.Open(small);
        var chunk = new byte[100_000];
        var stored = 0;
        QuotaExceededException? refused = null;
        while (refused is null && stored < 1000)
        {
            try
            {
                await job.PutAsync($"part-{stored}", chunk);
                stored++;
            }
            catch (QuotaExceededException ex)
            {
                refused = ex;
            }
        }

        Assert.Equal(25, stored);
        Assert.Contains($"job '{small.JobId}' may hold 2500000 bytes and holds 2500000", refused!.Message, StringComparison.Ordinal);
        Assert.Equal(25, await job.CountAsync());

        // The quota shows in the job's record and usage.
        var shown = await h.Http.GetFromJsonAsync<JobResponse>($"/v1/jobs/{small.JobId}", JsonSerializerOptions.Web);
        Assert.Equal(small.Quota, shown!.Quota);
        Assert.Equal(25 * 100_000, shown.Usage!.BlockBytes);

        var other = h.Open(await h.RegisterAsync(new { name = "other" }));
        await other.PutAsync("one-mib", new byte[1 << 20]);
        Assert.Equal(1 << 20, (await other.GetAsync("one-mib")).Length);
    }

    [Fact]
    public async Task ExplicitLimitsAndTheDefaultReachTheMetadataServer()
    {
        await using var h = await ControllerHarness.StartAsync();
        using var controller = new PocketControllerClient(h.Controller.Url, h.Cluster.Options.ClusterToken);
        var limited = await controller.RegisterJobAsync("limited", new JobHints { MaxObjects = 2, MaxKeyBytes = 1000 });
        Assert.Equal(2, limited.Quota!.Value.MaxObjects);
        var job = h.Open(limited);
        await job.PutAsync("a", new byte[10]);
        await job.PutAsync("b", new byte[10]);
        var refused = await Assert.ThrowsAsync<QuotaExceededException>(async () => await job.PutAsync("c", new byte[10]));
        Assert.Contains("may hold 2 objects", refused.Message, StringComparison.Ordinal);
        var usage = await job.GetUsageAsync();
        Assert.Equal((2L, 2L, limited.Quota), (usage.Objects, usage.KeyBytes, usage.Quota));

        // A job without hints gets one node's worth (the harness's 256 MiB nodes).
        var plain = await controller.RegisterJobAsync("plain");
        Assert.Equal(ControllerHarness.NodeCapacity, plain.Quota!.Value.MaxBytes);
        Assert.Equal(plain.Quota, (await h.Open(plain).GetUsageAsync()).Quota);

        // Bad limits are refused before anything is registered.
        using var bad = await h.Http.PostAsJsonAsync("/v1/jobs", new { name = "bad", maxObjects = -5 });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }
}
