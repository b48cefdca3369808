using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pocket.Cli.Up;

/// <summary>
/// The /metrics URLs of a running `pocket up` cluster in the format of Prometheus's file-based service discovery
/// (<c>file_sd_configs</c>): one group per target, with its scheme, path and a <c>role</c> label. Rewritten
/// (atomically: Prometheus re-reads it on change) whenever a storage node starts or stops, and removed when the cluster
/// stops, so a Prometheus pointed at it follows the autoscaler. Holds no secret: the scrape's bearer token is the
/// cluster token, which Prometheus reads from its own file.
/// </summary>
internal sealed class MetricsTargetsFile(string path, Func<IReadOnlyList<(string Role, Uri Url)>> targets)
{
    private readonly Lock _lock = new();

    public string Path { get; } = path;

    /// <summary>Writes the targets now; a file that cannot be written is left as it was (scraping is not the cluster's job).</summary>
    public void Write()
    {
        // The snapshot is taken under the lock: two writers racing (the first write at start and a node's start) could
        // otherwise write in the opposite order to their snapshots, leaving the older list in the file for good.
        lock (_lock)
        {
            WriteLocked();
        }
    }

    private void WriteLocked()
    {
        var groups = new JsonArray();
        foreach (var (role, url) in targets())
        {
            groups.Add(new JsonObject
            {
                ["targets"] = new JsonArray(url.Authority),
                ["labels"] = new JsonObject
                {
                    ["__scheme__"] = url.Scheme,
                    ["__metrics_path__"] = url.AbsolutePath,
                    ["role"] = role,
                },
            });
        }

        var text = groups.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
        var temporary = Path + ".tmp";
        try
        {
            File.WriteAllText(temporary, text);
            File.Move(temporary, Path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"pocket up: cannot write {Path}: {ex.Message}");
        }
    }

    /// <summary>Removes the file (the cluster stopped).</summary>
    public void Remove()
    {
        lock (_lock)
        {
            try
            {
                File.Delete(Path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
            }
        }
    }
}
