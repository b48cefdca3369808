using System.Text.RegularExpressions;

namespace Pocket.Kubernetes;

/// <summary>
/// The API server's own naming rules, checked when options are validated, so a typo fails at start-up with the
/// setting's name instead of at the first scale-up with a 422 from the cluster.
/// </summary>
internal static partial class KubernetesNames
{
    /// <summary>Longest pod name prefix: the prefix, "-", the longest tier ("dram"), "-" and the random suffix fit 63.</summary>
    public const int MaxPrefixLength = 63 - 1 - 4 - 1 - SuffixLength;

    /// <summary>Random characters at the end of a pod name.</summary>
    public const int SuffixLength = 8;

    /// <summary>A DNS-1123 label: namespaces, pod names, label name parts.</summary>
    public static bool IsLabel(string? text) => text is { Length: > 0 and <= 63 } && DnsLabel().IsMatch(text);

    /// <summary>A DNS-1123 subdomain: Secret and storage class names, label key prefixes.</summary>
    public static bool IsSubdomain(string? text) => text is { Length: > 0 and <= 253 } && text.Split('.').All(IsLabel);

    /// <summary>A key inside a Secret.</summary>
    public static bool IsSecretKey(string? text) => text is { Length: > 0 and <= 253 } && SecretKey().IsMatch(text);

    public static void ValidateLabels(IReadOnlyDictionary<string, string> labels, string what)
    {
        ArgumentNullException.ThrowIfNull(labels, what);
        foreach (var (key, value) in labels)
        {
            if (!IsLabelKey(key))
            {
                throw new ArgumentException($"{what}: '{key}' is not a label key ([prefix/]name, name at most 63 characters)");
            }

            if (value is null || value.Length > 63 || (value.Length > 0 && !LabelName().IsMatch(value)))
            {
                throw new ArgumentException($"{what}: value '{value}' of '{key}' is not a label value (at most 63 letters, digits, '-', '_', '.')");
            }
        }
    }

    private static bool IsLabelKey(string key)
    {
        var slash = key.IndexOf('/', StringComparison.Ordinal);
        var name = slash < 0 ? key : key[(slash + 1)..];
        return (slash < 0 || IsSubdomain(key[..slash])) && name.Length is > 0 and <= 63 && LabelName().IsMatch(name);
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex DnsLabel();

    [GeneratedRegex("^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")]
    private static partial Regex LabelName();

    [GeneratedRegex("^[-._a-zA-Z0-9]+$")]
    private static partial Regex SecretKey();
}
