using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;

namespace Pocket.Observability.Tests;

/// <summary>Scrapes a /metrics endpoint, checks it with Prometheus's own parser (promtool) and reads sample values.</summary>
internal static class Exposition
{
    public static async Task<string> ScrapeAsync(Uri url, string token, HttpMessageHandler? handler = null)
    {
        using var http = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{url}: HTTP {(int)response.StatusCode}: {text}");
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
        await CheckAsync(text, url.ToString());
        return text;
    }

    public static async Task<int> StatusWithoutTokenAsync(Uri url, string? token)
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using var response = await http.SendAsync(request);
        return (int)response.StatusCode;
    }

    /// <summary>Runs <c>promtool check metrics</c> (Debian's prometheus package; test.sh installs it) on the exposition.</summary>
    public static async Task CheckAsync(string exposition, string source)
    {
        var promtool = new[] { "/usr/bin/promtool", "/usr/local/bin/promtool" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("promtool is missing: install Debian's prometheus package (test.sh does: apt-get install prometheus)");
        var start = new ProcessStartInfo(promtool, ["check", "metrics"]) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(exposition);
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));

        // Exit 0: valid and lint-clean; 3: valid with lint findings (e.g. naming), which we treat as failures too.
        Assert.True(process.ExitCode == 0, $"promtool check metrics failed for {source} (exit {process.ExitCode}): {await output}{await error}");
    }

    /// <summary>The value of the sample <paramref name="series"/> (name with labels exactly as exposed, e.g. <c>a{b="c"}</c>), or null.</summary>
    public static double? Value(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
            {
                return double.Parse(line.AsSpan(series.Length + 1).Trim(), NumberStyles.Float, CultureInfo.InvariantCulture);
            }
        }

        return null;
    }

    public static double ValueOrZero(string exposition, string series) => Value(exposition, series) ?? 0;
}
