using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Pocket.Admin;
using Pocket.Client;
using Pocket.Controller.Provisioning;
using Pocket.Protocol;

namespace Pocket.Cli.Tests;

/// <summary>
/// `--reply-pause` and `--reply-stall-timeout` of the binary-protocol roles reach the server: a client that pipelines
/// gets and never reads a reply is held at the pause it was given (not the 1 MiB default) and closed after the stall
/// timeout it was given (not the 30 s default), with the warning that says how much it left unread.
/// </summary>
public sealed partial class ReplyBackpressureFlagTests : IDisposable
{
    private const int Pause = 64 << 10;
    private const int ObjectSize = 32 << 10;

    private readonly TempHome _home = new();

    public void Dispose() => _home.Dispose();

    [Fact]
    public async Task AClientThatNeverReadsIsHeldAtTheGivenPauseAndClosedAfterTheGivenStall()
    {
        var token = JobToken.NewRandom();
        var environment = new Dictionary<string, string> { ["POCKET_CLUSTER_TOKEN"] = token.ToString() };
        await using var metadata = UpProcess.StartCommand(
            _home.Path, environment, "metadata", "--port", "0", "--reply-pause", "64KiB", "--reply-stall-timeout", "1s", "--stop-on-stdin-eof");
        var (_, address) = await metadata.WaitForReadyAsync(RoleCommandLine.MetadataReadyPrefix);

        using var cts = new CancellationTokenSource(PocketProcess.Timeout);
        await using var client = await PocketClient.ConnectAsync(address, new PocketClientOptions(), cts.Token);
        var job = await client.Admin(token).RegisterJobAsync("never-reads", cts.Token);
        var data = new byte[ObjectSize];
        Random.Shared.NextBytes(data);
        await job.PutAsync("a", data, cancellationToken: cts.Token);

        // 32 MB of replies asked for, none read: far more than the kernel's buffers take, so the server must hold the
        // connection at its pause (a send buffer alone may grow to 4 MiB here).
        var body = new BodyWriter().Str("a").I64(0).I64(-1).ToArray();
        var frame = new byte[FrameHeader.Size + body.Length];
        new FrameHeader(Opcode.Get, FrameFlags.None, Status.Ok, body.Length, 7, job.Token).Write(frame);
        body.CopyTo(frame, FrameHeader.Size);
        var burst = Enumerable.Range(0, 1000).SelectMany(_ => frame).ToArray();
        using var greedy = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await greedy.ConnectAsync(IPEndPoint.Parse(address), cts.Token);
        var sending = Task.Run(
            async () =>
            {
                try
                {
                    for (var i = 0; i < 1000; i++)
                    {
                        await greedy.SendAsync(burst, SocketFlags.None, cts.Token);
                    }
                }
                catch (SocketException)
                {
                    // Closed by the server.
                }
            },
            cts.Token);

        var warning = await metadata.WaitForErrorLineAsync(line => line.Contains("bytes of replies unread for", StringComparison.Ordinal));
        await sending.WaitAsync(cts.Token);

        // What waited is the pause and at most one reply more: the 1 MiB default would leave about a megabyte.
        var match = StalledPattern().Match(warning);
        Assert.True(match.Success, warning);
        Assert.InRange(int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), 1, Pause + FrameHeader.Size + ObjectSize);

        // Closed after the stall it was given: the 30 s default would not have closed it yet.
        Assert.InRange(TimeSpan.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(29));

        // The server lives on and serves everyone else.
        Assert.Equal(data, await job.GetAsync("a", cancellationToken: cts.Token));
        Assert.False(metadata.HasExited, metadata.Output);
    }


    [GeneratedRegex(@"(\d+) bytes of replies unread for (\S+),")]
    private static partial Regex StalledPattern();
}
