using System.Diagnostics;
using System.Text;
using Pocket.Protocol;

namespace Pocket.Controller.Provisioning;

/// <summary>
/// One pocket role (`pocket storage`, `pocket metadata`) run as a child process started with --stop-on-stdin-eof:
/// it is ready once it prints a line starting with a known prefix, and stops when its stdin closes (it is killed if
/// it has not within 10 s). The one implementation behind <see cref="LocalProcessProvisioner"/> and `pocket bench`'s
/// own cluster.
/// </summary>
public sealed class RoleProcess : IAsyncDisposable
{
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);

    private readonly Process _process;
    private int _stopped;

    private RoleProcess(Process process, string readyLine)
    {
        _process = process;
        ReadyLine = readyLine;
    }

    /// <summary>The child's process id.</summary>
    public int Id => _process.Id;

    /// <summary>The line the child printed when it was ready.</summary>
    public string ReadyLine { get; }

    /// <summary>True once the child has ended.</summary>
    public bool HasExited
    {
        get
        {
            try
            {
                return _process.HasExited;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// Starts <paramref name="executable"/> with <paramref name="arguments"/> (the cluster token, when there is one, goes
    /// in its environment, never on its command line) and waits for its first stdout line that starts with
    /// <paramref name="readyPrefix"/> and that <paramref name="isReady"/> accepts. A child that ends first, or is not ready
    /// within <paramref name="timeout"/>, fails the start with a <see cref="ProvisioningException"/> that says so (with
    /// the start of its stderr); it is killed on failure and on cancellation. <paramref name="role"/> names the child in
    /// errors ("storage process") and <paramref name="ready"/> what it does to be ready ("register").
    /// </summary>
    public static async Task<RoleProcess> StartAsync(
        string executable,
        IEnumerable<string> arguments,
        JobToken clusterToken,
        string readyPrefix,
        Func<string, bool> isReady,
        string role,
        string ready,
        TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        if (!clusterToken.IsNone)
        {
            start.Environment["POCKET_CLUSTER_TOKEN"] = clusterToken.ToString();
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new ProvisioningException($"could not start {executable}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new ProvisioningException($"could not start {executable}: {ex.Message}", ex);
        }

        var pid = process.Id;
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (stderr)
                {
                    if (stderr.Length < 8192)
                    {
                        stderr.AppendLine(line);
                    }
                }
            }
        };
        process.BeginErrorReadLine();

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            while (true)
            {
                var line = await process.StandardOutput.ReadLineAsync(deadline.Token).ConfigureAwait(false);
                if (line is null)
                {
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    string errors;
                    lock (stderr)
                    {
                        errors = stderr.ToString().Trim();
                    }

                    throw new ProvisioningException($"{role} exited with code {process.ExitCode} before it could {ready}: {errors}");
                }

                if (line.StartsWith(readyPrefix, StringComparison.Ordinal) && isReady(line))
                {
                    // Keep draining stdout so the child never blocks on a full pipe.
                    _ = DrainAsync(process);
                    return new RoleProcess(process, line);
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Kill(process);
            process.Dispose();
            throw new ProvisioningException($"{role} {pid} did not {ready} within {timeout.TotalSeconds:0} s");
        }
        catch
        {
            Kill(process);
            process.Dispose();
            throw;
        }
    }

    /// <summary>Closes the child's stdin, which asks it to stop; kills it if it has not within 10 s (or when cancelled).</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        try
        {
            if (!HasExited)
            {
                try
                {
                    _process.StandardInput.Close();
                }
                catch (IOException)
                {
                }

                using var grace = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                grace.CancelAfter(StopGrace);
                try
                {
                    await _process.WaitForExitAsync(grace.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    Kill(_process);
                    await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _process.Dispose();
        }
    }

    /// <summary>Stops the child (see <see cref="StopAsync"/>).</summary>
    public async ValueTask DisposeAsync() => await StopAsync(CancellationToken.None).ConfigureAwait(false);

    private static async Task DrainAsync(Process process)
    {
        try
        {
            while (await process.StandardOutput.ReadLineAsync().ConfigureAwait(false) is not null)
            {
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }
}
