namespace Pocket.Cli;

/// <summary>An expected failure: printed as one red line, exit code 1, no stack trace.</summary>
internal sealed class CliException(string message, Exception? inner = null) : Exception(message, inner);
