using System.CommandLine;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Pocket.Controller.Contracts;
using Pocket.Metrics;
using Pocket.Networking;

namespace Pocket.Cli;

/// <summary>
/// How a binary-protocol role (`pocket metadata`, `pocket storage`) takes connections: --idle-timeout, --event-loops,
/// --max-connections, --listen-backlog, --reply-pause and --reply-stall-timeout, each defaulting to the frame server's
/// own default.
/// </summary>
internal sealed class ListenerArguments
{
    private readonly Option<TimeSpan?> _idleTimeout = Commands.RoleCommands.IdleTimeoutOption();

    private readonly Option<int?> _maxConnections = Positive(new Option<int?>("--max-connections")
    {
        Description = "Connections served at once; one more is closed as it is accepted, with a log line (default: what the open-file limit leaves them: the role raises it to its hard limit at start, less the descriptors already open, 64 kept for threads and files and 32 for outgoing connections)",
        HelpName = "N",
    });

    private readonly Option<int?> _listenBacklog = Positive(new Option<int?>("--listen-backlog")
    {
        Description = $"Connects the kernel holds until they are accepted, for connect storms (default {new FrameServerOptions().ListenBacklog}; the kernel caps it at net.core.somaxconn)",
        HelpName = "N",
    });

    private readonly Option<int> _eventLoops = EventLoopsOption();

    private readonly Option<long?> _replyPause = ReplyPauseOption();

    private readonly Option<TimeSpan?> _replyStallTimeout = CommandRunner.DurationOption(
        "--reply-stall-timeout",
        $"Close a connection whose peer reads none of the replies waiting for it for this long, with a log line (default {Units.FormatDuration(new FrameServerOptions().ReplyStallTimeout)}; 0 = never: the idle timeout, when set, still closes it)");

    public ListenerArguments(Command command)
    {
        command.Options.Add(_idleTimeout);
        command.Options.Add(_eventLoops);
        command.Options.Add(_maxConnections);
        command.Options.Add(_listenBacklog);
        command.Options.Add(_replyPause);
        command.Options.Add(_replyStallTimeout);
    }

    /// <summary>The variable that gives `--event-loops` its default, so the roles a `pocket up` or `pocket bench` starts take it too.</summary>
    internal const string EventLoopsVariable = "POCKET_EVENT_LOOPS";

    /// <summary>Most event loops a server may be given.</summary>
    private const int MaxEventLoops = 256;

    /// <summary>The listener of a role on <paramref name="endPoint"/>, TLS when <paramref name="certificate"/> is given.</summary>
    public FrameServerOptions Options(ParseResult parse, IPEndPoint endPoint, X509Certificate2? certificate, FrameMetrics? metrics)
    {
        var defaults = new FrameServerOptions();
        return defaults with
        {
            EndPoint = endPoint,
            Certificate = certificate,
            IdleTimeout = parse.GetValue(_idleTimeout) ?? defaults.IdleTimeout,
            MaxConnections = parse.GetValue(_maxConnections) ?? defaults.MaxConnections,
            ListenBacklog = parse.GetValue(_listenBacklog) ?? defaults.ListenBacklog,
            EventLoops = parse.GetValue(_eventLoops),
            ReplyPauseBytes = parse.GetValue(_replyPause) is { } pause ? (int)pause : defaults.ReplyPauseBytes,
            ReplyStallTimeout = parse.GetValue(_replyStallTimeout) ?? defaults.ReplyStallTimeout,
            WrapHandler = metrics is null ? null : metrics.Wrap,
        };
    }

    /// <summary>
    /// `--event-loops`, defaulting to <see cref="EventLoopsVariable"/>: the roles take it, and `pocket up` for the servers
    /// it starts (in its own process, or as child roles).
    /// </summary>
    internal static Option<int> EventLoopsOption()
    {
        var option = new Option<int>("--event-loops")
        {
            Description = $"Event-loop threads serving the connections (0 = automatic: one per core, at least two; default ${EventLoopsVariable}, else 0)",
            HelpName = "N",
            DefaultValueFactory = result =>
            {
                if (!TryEventLoopsFromEnvironment(out var loops, out var error))
                {
                    result.AddError(error);
                }

                return loops;
            },
        };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > MaxEventLoops)
            {
                result.AddError($"--event-loops (or ${EventLoopsVariable}) must be between 0 (automatic) and {MaxEventLoops}");
            }
        });
        return option;
    }

    /// <summary>
    /// The event loops <see cref="EventLoopsVariable"/> asks for (0 = automatic, also when it is not set); false with the
    /// error when it is no number.
    /// </summary>
    internal static bool TryEventLoopsFromEnvironment(out int loops, out string error)
    {
        var variable = Environment.GetEnvironmentVariable(EventLoopsVariable);
        error = "";
        loops = 0;
        if (string.IsNullOrEmpty(variable))
        {
            return true;
        }

        if (!int.TryParse(variable, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out loops) || loops > MaxEventLoops)
        {
            error = $"${EventLoopsVariable} must be a number of event loops between 0 (automatic) and {MaxEventLoops}, not '{variable}'";
            loops = 0; // one error, not a second one from the option's range check
            return false;
        }

        return true;
    }

    /// <summary>
    /// `--reply-pause`: at most half the replies a connection may have waiting (<see cref="FrameServerOptions.MaxReplyBacklog"/>),
    /// so one reply more still fits under the bound; refused above it rather than quietly capped.
    /// </summary>
    private static Option<long?> ReplyPauseOption()
    {
        var defaults = new FrameServerOptions();
        var most = defaults.MaxReplyBacklog / 2;
        var option = CommandRunner.OptionalSizeOption(
            "--reply-pause",
            $"Stop reading a connection's requests while this much of its replies waits for the peer to read, until it reads some (default {Units.FormatSizeCompact(defaults.ReplyPauseBytes)}, at most {Units.FormatSizeCompact(most)}: half the {Units.FormatSizeCompact(defaults.MaxReplyBacklog)} past which a connection is closed)");
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<long?>() is > 0 and var pause && pause > most)
            {
                result.AddError($"--reply-pause must be at most {Units.FormatSizeCompact(most)} (half the {Units.FormatSizeCompact(defaults.MaxReplyBacklog)} of replies past which a connection is closed), not {Units.FormatSizeCompact(pause)}");
            }
        });
        return option;
    }

    private static Option<int?> Positive(Option<int?> option)
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int?>() is <= 0)
            {
                result.AddError($"{option.Name} must be a positive number");
            }
        });
        return option;
    }
}
