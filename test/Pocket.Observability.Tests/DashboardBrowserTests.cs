using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Playwright;
using Pocket.Client;
using Pocket.Controller;
using Pocket.Controller.Contracts;
using Pocket.Controller.Jobs;
using Pocket.Controller.Scaling;
using Pocket.Controller.Sizing;
using Pocket.Embedded;
using Pocket.Protocol;
using Xunit.Abstractions;

namespace Pocket.Observability.Tests;

/// <summary>
/// The controller's dashboard in a real browser (Debian's chromium, driven by Playwright) against a real in-process
/// cluster: a job registered and a node the autoscaler starts after the page loaded appear without a reload, and a
/// refused token shows the sign-in form, never cluster data.
/// </summary>
public sealed class DashboardBrowserTests(ITestOutputHelper output)
{
    private const string Chromium = "/usr/bin/chromium";
    private const long NodeCapacity = 64L << 20;

    // Real waits on a loaded machine: generous, and each ends as soon as the page shows what it waits for.
    private static readonly float WaitMs = (float)TimeSpan.FromSeconds(90).TotalMilliseconds;

    // The autoscaler acts only when told to: nothing is above 100 %, and shrinking needs a quiet day.
    private static readonly AutoscalerOptions ByHand = new()
    {
        Lower = 0.5,
        Upper = 1.0,
        MinNodes = 1,
        Cooldown = TimeSpan.FromDays(1),
        NewNodeCapacityBytes = NodeCapacity,
        Resources = ScalingResources.Capacity,
    };

    [Fact]
    public async Task AJobAndANodeTheAutoscalerAddsAppearWithoutAReload()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = NodeCapacity, PreTouchMemory = false, NodeTimeout = TimeSpan.FromMinutes(5) });
        await using var controller = Controller(cluster);
        await controller.StartAsync();
        var token = cluster.Options.ClusterToken.ToString();

        await using var browser = await BrowserAsync();
        var page = await browser.Browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 1100 } });
        var problems = Watch(page);
        var loads = 0;
        page.Load += (_, _) => Interlocked.Increment(ref loads);

        await page.GotoAsync(new Uri(controller.Url, "/#token=" + token).ToString());
        await Assertions.Expect(page.Locator("#dashboard")).ToBeVisibleAsync(new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#login")).ToBeHiddenAsync();
        await Assertions.Expect(page.Locator("#nodes tr[data-node]")).ToHaveCountAsync(1, new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#jobs tr[data-job]")).ToHaveCountAsync(0);

        // The token left the address bar once read (it stays in the tab's session storage).
        Assert.DoesNotContain(token, page.Url, StringComparison.Ordinal);
        await page.EvaluateAsync("() => { window.pocketMarker = 'same page'; }");

        // After the page loaded: a job registers through the API, and the autoscaler starts a second node.
        using var api = new PocketControllerClient(controller.Url, cluster.Options.ClusterToken);
        var job = await api.RegisterJobAsync("browser-test", new JobHints { CapacityBytes = 1 << 20 });
        await controller.Autoscaler!.ScaleUpAsync(NodeTier.Dram, "browser test");

        await Assertions.Expect(page.Locator($"#jobs tr[data-job=\"{job.JobId}\"]")).ToContainTextAsync("browser-test", new() { Timeout = WaitMs });

        // The job stores an object: its usage (objects, stored bytes) follows on the page.
        await using (var client = await cluster.ConnectAsync())
        {
            await client.OpenJob(job.JobId, job.Token).PutAsync("object", new byte[1 << 20]);
        }

        var row = page.Locator($"#jobs tr[data-job=\"{job.JobId}\"]");
        await Assertions.Expect(row.Locator("td").Nth(3)).ToHaveTextAsync("1", new() { Timeout = WaitMs });
        await Assertions.Expect(row.Locator("td").Nth(4)).ToHaveTextAsync("1.00 MiB", new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#nodes tr[data-node]")).ToHaveCountAsync(2, new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#events li[data-kind=\"scale-up\"]").First).ToContainTextAsync("browser test", new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#totals")).ToContainTextAsync("2 dram", new() { Timeout = WaitMs });

        // The same document all along: no navigation, no reload.
        Assert.Equal("same page", await page.EvaluateAsync<string>("() => window.pocketMarker"));
        Assert.Equal(1, Volatile.Read(ref loads));

        // The charts drew (uPlot makes a canvas per chart) once the history had samples.
        await Assertions.Expect(page.Locator("#chart-capacity canvas")).ToHaveCountAsync(1, new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#updated")).ToContainTextAsync("live", new() { Timeout = WaitMs });

        // Kept as the run's artefact: test.sh points POCKET_TEST_ARTIFACTS at artifacts/test in the checkout, which CI
        // keeps; a run without it (an IDE) leaves the picture in the temp folder.
        var folder = Environment.GetEnvironmentVariable("POCKET_TEST_ARTIFACTS") is { Length: > 0 } kept
            ? kept
            : Path.Combine(Path.GetTempPath(), $"pocket-test-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        var screenshot = Path.Combine(folder, "dashboard.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot, FullPage = true });
        output.WriteLine($"dashboard screenshot: {screenshot}");
        var png = await File.ReadAllBytesAsync(screenshot);
        Assert.True(png.AsSpan().StartsWith((ReadOnlySpan<byte>)[0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]), "the screenshot is not a PNG");
        Assert.True(png.Length > 10_000, $"the screenshot is only {png.Length} bytes");

        Assert.Empty(problems);
    }

    [Fact]
    public async Task ARefusedTokenShowsTheSignInFormAndNoClusterData()
    {
        await using var cluster = await PocketCluster.StartAsync(new PocketClusterOptions { StorageNodes = 1, NodeCapacity = NodeCapacity, PreTouchMemory = false, NodeTimeout = TimeSpan.FromMinutes(5) });
        await using var controller = Controller(cluster);
        await controller.StartAsync();
        using var api = new PocketControllerClient(controller.Url, cluster.Options.ClusterToken);
        var job = await api.RegisterJobAsync("secret-job", new JobHints { CapacityBytes = 1 << 20 });

        await using var browser = await BrowserAsync();
        var page = await browser.Browser.NewPageAsync();
        Watch(page);

        // A well-formed token that is not the cluster's, in the fragment.
        await page.GotoAsync(new Uri(controller.Url, "/#token=" + JobToken.NewRandom()).ToString());
        await Assertions.Expect(page.Locator("#login")).ToBeVisibleAsync(new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#login-error")).ToContainTextAsync("refused", new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#dashboard")).ToBeHiddenAsync();
        await AssertNoClusterDataAsync(page, job.JobId);

        // Typed: something that is not a token is rejected before anything is sent; a wrong token is refused.
        await page.Locator("#token").FillAsync("not a token");
        await page.Locator("#login-form button[type=submit]").ClickAsync();
        await Assertions.Expect(page.Locator("#login-error")).ToContainTextAsync("32 hex digits");
        await page.Locator("#token").FillAsync(JobToken.NewRandom().ToString());
        await page.Locator("#login-form button[type=submit]").ClickAsync();
        await Assertions.Expect(page.Locator("#login-error")).ToContainTextAsync("refused", new() { Timeout = WaitMs });
        await Assertions.Expect(page.Locator("#dashboard")).ToBeHiddenAsync();
        await AssertNoClusterDataAsync(page, job.JobId);

        // The right token opens the dashboard in the same tab, and signing out hides it again.
        await page.Locator("#token").FillAsync(cluster.Options.ClusterToken.ToString());
        await page.Locator("#login-form button[type=submit]").ClickAsync();
        await Assertions.Expect(page.Locator($"#jobs tr[data-job=\"{job.JobId}\"]")).ToContainTextAsync("secret-job", new() { Timeout = WaitMs });
        await page.Locator("#logout").ClickAsync();
        await Assertions.Expect(page.Locator("#login")).ToBeVisibleAsync();
        await Assertions.Expect(page.Locator("#dashboard")).ToBeHiddenAsync();
    }

    private static async Task AssertNoClusterDataAsync(IPage page, string jobId)
    {
        await Assertions.Expect(page.Locator("#jobs tr[data-job]")).ToHaveCountAsync(0);
        await Assertions.Expect(page.Locator("#nodes tr[data-node]")).ToHaveCountAsync(0);
        Assert.DoesNotContain(jobId, await page.ContentAsync(), StringComparison.Ordinal);
    }

    private static ControllerServer Controller(PocketCluster cluster) => new(
        new ControllerOptions
        {
            MetadataAddress = cluster.MetadataAddress,
            ClusterToken = cluster.Options.ClusterToken,
            Registry = new JobRegistryOptions
            {
                Sizing = new SizingOptions { MinimumNodes = 1, NodeClasses = [NodeClassOptions.Dram with { CapacityBytes = NodeCapacity }] },
            },
            Autoscaler = ByHand,
            TelemetryInterval = TimeSpan.FromSeconds(1),
        },
        new InProcessProvisioner(cluster),
        NullLoggerFactory.Instance);

    /// <summary>Script errors and failed requests of the page, other than the 401s a refused token is meant to get.</summary>
    private static List<string> Watch(IPage page)
    {
        var problems = new List<string>();
        page.PageError += (_, error) => { lock (problems) { problems.Add("page error: " + error); } };
        page.Console += (_, message) =>
        {
            if (message.Type == "error" && !message.Text.Contains("401", StringComparison.Ordinal))
            {
                lock (problems) { problems.Add("console error: " + message.Text); }
            }
        };
        page.RequestFailed += (_, request) => { lock (problems) { problems.Add("request failed: " + request.Url + " " + request.Failure); } };
        return problems;
    }

    private static async Task<BrowserSession> BrowserAsync()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: install Debian's chromium (test.sh does when run as root)");

        // Playwright drives the browser through its bundled node driver; it must never download a browser of its own.
        Environment.SetEnvironmentVariable("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
        var playwright = await Playwright.CreateAsync();
        try
        {
            var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = Chromium,
                Headless = true,
                Timeout = WaitMs,
                Args =
                [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                ],
            });
            return new BrowserSession(playwright, browser);
        }
        catch
        {
            playwright.Dispose();
            throw;
        }
    }

    private sealed class BrowserSession(IPlaywright playwright, IBrowser browser) : IAsyncDisposable
    {
        public IBrowser Browser { get; } = browser;

        public async ValueTask DisposeAsync()
        {
            await Browser.DisposeAsync();
            playwright.Dispose();
        }
    }
}
