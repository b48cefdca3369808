using System.Text;

namespace Pocket.Protocol.Messages;

/// <summary>Keys and names in message views are UTF-8 the reader has already validated.</summary>
internal static class Key
{
    public static string ToString(ReadOnlySpan<byte> utf8) => utf8.IsEmpty ? string.Empty : Encoding.UTF8.GetString(utf8);
}
