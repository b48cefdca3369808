using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `pocket controller`'s metadata-plane flags on the real executable: --metadata-spare (more servers as local
/// children), --metadata-servers and --metadata-max (the plane of pods --provisioner kubernetes runs). A combination
/// that makes no sense is one clear line and exit 1, before anything starts.
/// </summary>
public sealed class ControllerPlaneFlagTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Theory]
    [InlineData("--metadata is required", "controller")]
    [InlineData("--metadata is required", "controller", "--provisioner", "none")]
    [InlineData("--metadata-spare: 'nowhere' is not HOST:PORT", "controller", "--metadata", "127.0.0.1:1", "--metadata-spare", "nowhere")]
    [InlineData("--metadata-spare needs --provisioner local", "controller", "--metadata", "127.0.0.1:1", "--metadata-spare", "127.0.0.1:2", "--provisioner", "none")]
    [InlineData("127.0.0.1:1 is a running server", "controller", "--metadata", "127.0.0.1:1", "--metadata-spare", "127.0.0.1:1")]
    [InlineData("one listening host", "controller", "--metadata", "127.0.0.1:1", "--metadata-spare", "127.0.0.1:2,127.0.0.2:3")]
    [InlineData("an address is named twice", "controller", "--metadata", "127.0.0.1:1", "--metadata-spare", "127.0.0.1:2,127.0.0.1:2")]
    [InlineData("with --metadata, give --metadata-spare", "controller", "--metadata", "127.0.0.1:1", "--metadata-max", "2")]
    [InlineData("with --metadata, give --metadata-spare", "controller", "--metadata", "127.0.0.1:1", "--metadata-servers", "2")]
    [InlineData("--metadata-max must be between --metadata-servers (2) and 16", "controller", "--provisioner", "kubernetes", "--kubernetes-image", "pocket:1", "--metadata-servers", "2", "--metadata-max", "1")]
    [InlineData("--metadata-max must be between --metadata-servers (1) and 16", "controller", "--provisioner", "kubernetes", "--kubernetes-image", "pocket:1", "--metadata-max", "17")]
    [InlineData("--metadata-servers must be between 1 and 16", "controller", "--provisioner", "kubernetes", "--kubernetes-image", "pocket:1", "--metadata-servers", "0")]
    [InlineData("--metadata-spare is for --provisioner local", "controller", "--provisioner", "kubernetes", "--kubernetes-image", "pocket:1", "--metadata-spare", "127.0.0.1:2")]
    public async Task AMetadataPlaneThatMakesNoSenseIsOneClearLine(string expected, params string[] arguments)
    {
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = JobToken.NewRandom().ToString() };

        var result = await PocketProcess.RunAsync(_home.Path, environment, arguments);

        Assert.True(result.ExitCode == 1, $"pocket {string.Join(' ', arguments)}: {result}");
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheHelpSaysHowThePlaneScales()
    {
        var help = (await PocketProcess.RunOkAsync(_home.Path, "controller", "--help")).Stdout;

        Assert.Contains("--metadata-spare", help, StringComparison.Ordinal);
        Assert.Contains("--metadata-servers", help, StringComparison.Ordinal);
        Assert.Contains("--metadata-max", help, StringComparison.Ordinal);
        Assert.Contains("runs the metadata plane as pods", help, StringComparison.Ordinal);
    }
}
