namespace Pocket.Protocol;

/// <summary>
/// The rule for job names, checked by the controller before it sizes a job and by the metadata server before it
/// registers one, so both refuse the same names with the same words.
/// </summary>
public static class JobName
{
    /// <summary>Longest job name, in characters.</summary>
    public const int MaxLength = 64;

    /// <summary>The rule in words, for error messages and docs.</summary>
    public const string Rule = "1-64 letters, digits, '-', '_' or '.'";

    /// <summary>True when <paramref name="name"/> is 1-64 ASCII letters, digits, '-', '_' or '.'.</summary>
    public static bool IsValid(ReadOnlySpan<char> name)
    {
        if (name.Length is 0 or > MaxLength)
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '_' or '.'))
            {
                return false;
            }
        }

        return true;
    }
}
