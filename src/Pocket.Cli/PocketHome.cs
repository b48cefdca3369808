using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Pocket.Cli;

/// <summary>What `pocket up` leaves for the client verbs: where the cluster is (controller URL, metadata server) and its admin token.</summary>
internal sealed record ClusterState(string Metadata, string ClusterToken, int Pid, string? Controller = null, string? Gateway = null, string? GatewayAccessKey = null, string? GatewaySecretKey = null, string? TlsCa = null);

/// <summary>
/// A job this user registered; the token is the secret that lets the data verbs use it, the metadata address where
/// they find its data, the controller (when it registered through one) where `pocket job rm` ends it.
/// </summary>
internal sealed record JobEntry(string Id, string Token, string? Metadata, string? Controller = null);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ClusterState))]
[JsonSerializable(typeof(List<JobEntry>))]
internal sealed partial class StateJsonContext : JsonSerializerContext;

/// <summary>
/// $POCKET_HOME (default ~/.pocket): cluster.json and jobs.json. Both hold secrets, so they are created
/// 0600 inside a 0700 directory and replaced atomically, never rewritten in place.
/// </summary>
internal sealed class PocketHome
{
    private const UnixFileMode PrivateFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode PrivateDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public PocketHome(string directory) => Directory = directory;

    public string Directory { get; }

    public string ClusterFile => Path.Combine(Directory, "cluster.json");

    /// <summary>The running cluster's /metrics URLs as Prometheus file-based service discovery reads them.</summary>
    public string MetricsTargetsFile => Path.Combine(Directory, "metrics-targets.json");

    public string JobsFile => Path.Combine(Directory, "jobs.json");

    public static PocketHome Default()
    {
        var configured = Environment.GetEnvironmentVariable("POCKET_HOME");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return new PocketHome(Path.GetFullPath(configured));
        }

        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return new PocketHome(Path.Combine(string.IsNullOrEmpty(home) ? "." : home, ".pocket"));
    }

    public ClusterState? ReadCluster()
    {
        var text = ReadText(ClusterFile);
        if (text is null)
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(text, StateJsonContext.Default.ClusterState);
        }
        catch (JsonException ex)
        {
            throw new CliException($"{ClusterFile} is not valid ({ex.Message}); delete it if no cluster is running");
        }
    }

    public void WriteCluster(ClusterState state) =>
        WriteAtomically(ClusterFile, JsonSerializer.Serialize(state, StateJsonContext.Default.ClusterState));

    /// <summary>Removes cluster.json if it still describes the cluster of <paramref name="pid"/> (a newer `pocket up` may own it).</summary>
    public void RemoveCluster(int pid)
    {
        try
        {
            if (ReadCluster() is { } state && state.Pid == pid)
            {
                File.Delete(ClusterFile);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CliException)
        {
            // Shutting down: a state file we cannot read or remove is reported by the next command that reads it.
        }
    }

    public List<JobEntry> ReadJobs()
    {
        var text = ReadText(JobsFile);
        if (text is null)
        {
            return [];
        }

        try
        {
            return JsonSerializer.Deserialize(text, StateJsonContext.Default.ListJobEntry) ?? [];
        }
        catch (JsonException ex)
        {
            throw new CliException($"{JobsFile} is not valid ({ex.Message})");
        }
    }

    /// <summary>Read-modify-write of jobs.json under a lock file, so two commands at once lose no job.</summary>
    public async Task<T> UpdateJobsAsync<T>(Func<List<JobEntry>, T> update, CancellationToken cancellationToken)
    {
        EnsureDirectory();
        var lockPath = JobsFile + ".lock";
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            FileStream? lockFile = null;
            try
            {
                lockFile = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException) when (deadline.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(20, cancellationToken).ConfigureAwait(false);
                continue;
            }
            catch (IOException ex)
            {
                throw new CliException($"{JobsFile} stays locked ({lockPath}): {ex.Message}");
            }

            using (lockFile)
            {
                var jobs = ReadJobs();
                var result = update(jobs);
                WriteAtomically(JobsFile, JsonSerializer.Serialize(jobs, StateJsonContext.Default.ListJobEntry));
                return result;
            }
        }
    }

    public static bool IsProcessAlive(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static string? ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }
    }

    private void EnsureDirectory()
    {
        if (OperatingSystem.IsWindows())
        {
            System.IO.Directory.CreateDirectory(Directory);
        }
        else
        {
            System.IO.Directory.CreateDirectory(Directory, PrivateDirectory);
        }
    }

    private void WriteAtomically(string path, string text)
    {
        EnsureDirectory();
        var temp = $"{path}.{Environment.ProcessId}.tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = PrivateFile;
        }

        using (var writer = new StreamWriter(temp, new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false), options))
        {
            writer.Write(text);
            writer.Write('\n');
        }

        if (!OperatingSystem.IsWindows())
        {
            // A leftover temp file from a crashed run keeps its old mode; make sure the secret is private.
            File.SetUnixFileMode(temp, PrivateFile);
        }

        File.Move(temp, path, overwrite: true);
    }
}
