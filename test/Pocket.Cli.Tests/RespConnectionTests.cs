using Microsoft.Extensions.Time.Testing;
using Pocket.LoadGenerator;

namespace Pocket.Cli.Tests;

/// <summary>
/// The load generator's raw RESP connection (`pocket bench --connections N` against a peer) against a real
/// redis-server: a server at its client limit, and the request timeout on the connection's own clock.
/// </summary>
public sealed class RespConnectionTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task AServerAtItsClientLimitRefusesTheConnectionInItsOwnWordsAndTheOthersKeepWorking()
    {
        // Redis (like Garnet past its --network-connection-limit) accepts the TCP connection, writes an error no
        // command asked for and closes it: before, the bench stopped with "sent bytes no command asked for".
        await using var redis = await RedisProcess.StartAsync();
        await using var open = await RespConnection.ConnectAsync("127.0.0.1", redis.Port, CancellationToken.None).WaitAsync(Bound);
        Assert.Equal("OK", await redis.CommandAsync("CONFIG SET maxclients 1"));

        var refused = await Assert.ThrowsAsync<LoadGeneratorException>(
            () => RespConnection.ConnectAsync("127.0.0.1", redis.Port, CancellationToken.None).WaitAsync(Bound));

        Assert.Contains("refused the connection", refused.Message, StringComparison.Ordinal);
        Assert.Contains("max number of clients reached", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, await open.CommandAsync("PING").AsTask().WaitAsync(Bound));
        Assert.Equal(0, await open.CommandAsync("EXISTS", "missing").AsTask().WaitAsync(Bound));
    }

    [Fact]
    public async Task ACommandIsLateThirtySecondsAfterItsOwnStartNotThePreviousCommands()
    {
        await using var redis = await RedisProcess.StartAsync();
        var time = new FakeTimeProvider();
        await using var connection = await RespConnection.ConnectAsync("127.0.0.1", redis.Port, CancellationToken.None, time).WaitAsync(Bound);
        Assert.Equal(0, connection.BusySince);

        // The connection's last command (its PING) is a minute old when the next one starts: the tick's decision is made
        // from the one value the start publishes, so the new command is never judged by the old one's start.
        time.Advance(TimeSpan.FromMinutes(1));
        var blocked = connection.CommandAsync("BLPOP", "nothing-will-arrive", "0").AsTask();
        Assert.Equal(time.GetTimestamp(), connection.BusySince);
        Assert.False(RespConnection.IsLate(connection.BusySince, time.GetTimestamp(), time));
        time.Advance(TimeSpan.FromSeconds(29));
        Assert.False(RespConnection.IsLate(connection.BusySince, time.GetTimestamp(), time));
        Assert.False(blocked.IsCompleted);

        // Past 30 s the client loops' own timer fails it, with the server's name.
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(RespConnection.IsLate(connection.BusySince, time.GetTimestamp(), time));
        var late = await Assert.ThrowsAsync<LoadGeneratorException>(() => blocked.WaitAsync(Bound));
        Assert.Contains($"127.0.0.1:{redis.Port} did not answer within 30 s", late.Message, StringComparison.Ordinal);
        Assert.False(RespConnection.IsLate(0, time.GetTimestamp(), time));
    }
}
