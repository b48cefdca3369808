using System.Text.Json.Nodes;
using Pocket.Cli.Up;

namespace Pocket.Cli.Tests;

/// <summary>metrics-targets.json under concurrent writes: the last list taken is the one the file keeps.</summary>
public sealed class MetricsTargetsFileTests : IDisposable
{
    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task AWriteRacingAnOlderOneLeavesTheNewerListInTheFile()
    {
        // The first write's list is taken, then held up; meanwhile a node starts and a second write runs. Before, the
        // second wrote first and the held-up first then wrote its older list over it, for good (`pocket up` once left a
        // started node out of the file this way).
        using var firstTaken = new SemaphoreSlim(0);
        using var release = new SemaphoreSlim(0);
        var calls = 0;
        IReadOnlyList<(string Role, Uri Url)> Targets()
        {
            var call = Interlocked.Increment(ref calls);
            List<(string, Uri)> list = [("storage", new Uri("http://127.0.0.1:1001/metrics"))];
            if (call == 1)
            {
                firstTaken.Release();
                release.Wait();
                return list;
            }

            list.Add(("storage", new Uri("http://127.0.0.1:1002/metrics")));
            return list;
        }

        var file = new MetricsTargetsFile(_home.File("metrics-targets.json"), Targets);
        var first = Task.Run(file.Write);
        await firstTaken.WaitAsync(TimeSpan.FromSeconds(60));
        var second = Task.Run(file.Write);

        // Let the second run as far as it can (before: all the way) before the first goes on.
        await Task.WhenAny(second, Task.Delay(TimeSpan.FromMilliseconds(300)));
        release.Release();
        await Task.WhenAll(first, second).WaitAsync(TimeSpan.FromSeconds(60));

        var targets = JsonNode.Parse(await File.ReadAllTextAsync(file.Path))!.AsArray();
        Assert.Equal(2, targets.Count);
    }
}
