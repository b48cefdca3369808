using System.Text;

namespace Pocket.Protocol;

/// <summary>Rules for object keys inside a job: '/'-separated parts, no empty part, no '.' or '..'.</summary>
public static class ObjectKey
{
    /// <summary>
    /// The first character of keys that tools layered on Pocket keep for themselves (the S3 gateway's object records):
    /// U+FFFF, the largest UTF-16 code unit, so they sort after every other key. List and Count with an empty prefix
    /// leave them out; a prefix that starts with it lists them.
    /// </summary>
    public const string HiddenRoot = "\uffff";

    public static bool IsValid(string key, ProtocolLimits limits, out string error) => IsValid(key.AsSpan(), limits, out error);

    /// <summary>The same rules over a span; allocates only the error message.</summary>
    public static bool IsValid(ReadOnlySpan<char> key, ProtocolLimits limits, out string error)
    {
        error = string.Empty;
        if (key.Length == 0)
        {
            error = "key is empty";
            return false;
        }

        if (Encoding.UTF8.GetByteCount(key) > limits.MaxKeyBytes)
        {
            error = $"key is longer than {limits.MaxKeyBytes} UTF-8 bytes";
            return false;
        }

        var parts = 0;
        foreach (var range in key.Split('/'))
        {
            parts++;
            var part = key[range];
            if (part.Length == 0 || part is "." or "..")
            {
                error = $"key '{key}' has an empty, '.' or '..' path part";
                return false;
            }
        }

        if (parts > limits.MaxKeyComponents)
        {
            error = $"key has more than {limits.MaxKeyComponents} path parts";
            return false;
        }

        foreach (var c in key)
        {
            if (char.IsControl(c))
            {
                error = "key contains a control character";
                return false;
            }
        }

        return true;
    }

    /// <summary>A prefix may be empty (the whole job) and may end with '/'.</summary>
    public static bool IsValidPrefix(string prefix, ProtocolLimits limits, out string error)
    {
        error = string.Empty;
        if (prefix.Length == 0)
        {
            return true;
        }

        var trimmed = prefix.EndsWith('/') ? prefix[..^1] : prefix;
        return trimmed.Length == 0 ? Fail("prefix '/' is not allowed; use the empty prefix", out error) : IsValid(trimmed, limits, out error);
    }

    private static bool Fail(string message, out string error)
    {
        error = message;
        return false;
    }
}
