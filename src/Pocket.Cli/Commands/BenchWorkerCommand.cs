using System.CommandLine;
using Pocket.LoadGenerator;
using Pocket.Protocol;

namespace Pocket.Cli.Commands;

/// <summary>
/// `pocket bench worker` (hidden): one worker process of `pocket bench --connections N --processes P`. It reads its
/// spec and commands on stdin and answers on stdout, one JSON line each (<see cref="BenchWorker"/>); people never run it.
/// </summary>
internal static class BenchWorkerCommand
{
    public static Command Create()
    {
        var command = new Command("worker", "A worker process of `pocket bench --processes` (started by the bench, not by hand)") { Hidden = true };
        CommandRunner.SetAction(command, (_, ct) => BenchWorker.RunAsync(Console.In, Console.Out, OpenAsync, ct));
        return command;
    }

    /// <summary>The worker's untimed target and how it opens each of its connections: to a RESP peer, or to Pocket and its job.</summary>
    private static async Task<(IBenchTarget Shared, Func<CancellationToken, Task<(IBenchTarget Target, IAsyncDisposable Owner)>> ConnectOne)> OpenAsync(BenchWorkerSpec spec, CancellationToken cancellationToken)
    {
        if (spec.Resp is { } resp)
        {
            if (!BenchPeer.TryParse(resp, out var peer, out var error))
            {
                throw new LoadGeneratorException($"bench worker: {error}");
            }

            var shared = await RedisBenchTarget.ConnectAsync(peer!, _ => { }, cancellationToken, spec.Root).ConfigureAwait(false);
            return (shared, ct => shared.ConnectAnotherAsync(peer!, ct));
        }

        if (spec.Metadata is not { } metadata || spec.JobId is not { } jobId || !JobToken.TryParse(spec.JobToken, out var token))
        {
            throw new LoadGeneratorException("bench worker: the spec names neither a RESP peer nor Pocket's metadata server, job and token");
        }

        ClientTls.UseOptions(spec.TlsTrustFile, spec.TlsName);
        var connection = new ClusterConnection(metadata, JobToken.None, "the bench");
        var connect = connection.Connector(spec.SmallObjectThreshold);
        var client = await connect(cancellationToken).ConfigureAwait(false);
        var target = new PocketBenchTarget(client.OpenJob(jobId, token), spec.Root, null, () => null, client);
        return (target, ConnectOneAsync);

        async Task<(IBenchTarget Target, IAsyncDisposable Owner)> ConnectOneAsync(CancellationToken ct)
        {
            var own = await connect(ct).ConfigureAwait(false);
            return (new PocketBenchTarget(own.OpenJob(jobId, token), spec.Root, null, () => null), own);
        }
    }
}
