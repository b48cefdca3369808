using Pocket.Networking;

namespace Pocket.Tests;

/// <summary>The refused-connect log lines of a server: the first at once, the rest counted per period.</summary>
public sealed class RefusalLogTests
{
    [Fact]
    public void RefusalsCountedWhenItStopsGetTheirLineThen()
    {
        var first = 0;
        var more = new List<int>();
        var log = new RefusalLog(() => first++, (count, _) => more.Add(count), TimeProvider.System);
        for (var i = 0; i < 3; i++)
        {
            log.Refused();
        }

        // A server stopping within the period (its real clock has not ended it, or has once): the count is not lost.
        log.Dispose();
        Assert.Equal(1, first);
        Assert.Equal(2, more.Sum());
    }
}
