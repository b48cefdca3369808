namespace Pocket.Networking;

/// <summary>
/// Log lines for connects a server refuses, without a line per connect: a storm past the limit would otherwise
/// write thousands. The first refusal is logged at once; the ones after it are counted, and each second that had any
/// ends with one line saying how many. A second with none ends the count, and the next refusal is logged at once again.
/// </summary>
internal sealed class RefusalLog : IDisposable
{
    /// <summary>How often a storm of refusals writes a line.</summary>
    public static readonly TimeSpan Period = TimeSpan.FromSeconds(1);

    private readonly Action _first;
    private readonly Action<int, TimeSpan> _more;
    private readonly ITimer _timer;
    private readonly Lock _lock = new();
    private bool _counting;
    private int _unlogged;

    /// <param name="first">Logs one refusal.</param>
    /// <param name="more">Logs how many more were refused over the period.</param>
    /// <param name="time">Drives the period.</param>
    public RefusalLog(Action first, Action<int, TimeSpan> more, TimeProvider time)
    {
        _first = first;
        _more = more;
        _timer = time.CreateTimer(_ => EndPeriod(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public void Refused()
    {
        lock (_lock)
        {
            if (_counting)
            {
                _unlogged++;
                return;
            }

            _counting = true;
            _timer.Change(Period, Timeout.InfiniteTimeSpan);
        }

        _first();
    }

    private void EndPeriod()
    {
        int count;
        lock (_lock)
        {
            count = _unlogged;
            _unlogged = 0;
            _counting = count > 0;
            if (_counting)
            {
                _timer.Change(Period, Timeout.InfiniteTimeSpan);
            }
        }

        if (count > 0)
        {
            _more(count, Period);
        }
    }

    /// <summary>Stops the period; refusals counted and not yet logged get their line now (the disposed timer ignores the re-arm).</summary>
    public void Dispose()
    {
        _timer.Dispose();
        EndPeriod();
    }
}
