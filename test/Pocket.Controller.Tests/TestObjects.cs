using System.Security.Cryptography;
using Pocket.Controller.Contracts;

namespace Pocket.Controller.Tests;

/// <summary>Objects whose bytes follow from their key, their checksums, and waiting on a real cluster.</summary>
internal static class TestObjects
{
    public static string Hash(byte[] data) => Convert.ToHexString(SHA256.HashData(data));

    /// <summary>The bytes of the object <paramref name="key"/>: the same every time, different for every key.</summary>
    public static byte[] Data(string key, int length)
    {
        var data = new byte[length];
        new Random(StringComparer.Ordinal.GetHashCode(key)).NextBytes(data);
        return data;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails after a minute (generous for a loaded machine).</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(20);
        }
    }
}
