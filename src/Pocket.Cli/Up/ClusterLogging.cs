using Microsoft.Extensions.Logging;

namespace Pocket.Cli.Up;

/// <summary>
/// Logging for a cluster this process runs, to stderr. Stopping takes the nodes down before the metadata server,
/// which then warns that they died: true, but noise on a clean shutdown, so after <see cref="Stopping"/> only errors
/// are shown. (A filter function replaces the minimum level, so it carries both.)
/// </summary>
internal sealed class ClusterLogging : IDisposable
{
    private readonly LogLevel _minimum;
    private volatile bool _stopping;

    public ClusterLogging(bool verbose)
    {
        _minimum = verbose ? LogLevel.Information : LogLevel.Warning;
        Factory = LoggerFactory.Create(logging => logging
            .SetMinimumLevel(_minimum)
            .AddFilter((_, level) => level >= (_stopping ? LogLevel.Error : _minimum))
            .AddSimpleConsole(console =>
            {
                console.SingleLine = true;
                console.TimestampFormat = "HH:mm:ss.fff ";
            })
            .AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace));
    }

    public ILoggerFactory Factory { get; }

    public void Stopping() => _stopping = true;

    public void Dispose() => Factory.Dispose();
}
