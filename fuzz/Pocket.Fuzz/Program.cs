using Pocket.Fuzzing;
using SharpFuzz;

// pocket-fuzz            AFL++ mode: afl-fuzz runs this program; each input goes through FuzzTargets.RunSelected
// pocket-fuzz --libfuzzer libFuzzer mode (with SharpFuzz's libfuzzer-dotnet driver)
// pocket-fuzz --replay DIR... runs every file once and reports the first that breaks a target (no fuzzer needed)
if (args.Length > 0 && args[0] == "--replay")
{
    var count = 0;
    foreach (var file in args.Skip(1).SelectMany(d => Directory.Exists(d) ? Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories) : [d]).Order(StringComparer.Ordinal))
    {
        if (file.EndsWith(".md", StringComparison.Ordinal))
        {
            continue;
        }

        try
        {
            FuzzTargets.RunSelected(File.ReadAllBytes(file));
            count++;
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"{file}: {ex.GetType().Name}: {ex.Message}");
            return 1;
        }
    }

    Console.WriteLine($"{count} inputs, 0 failures");
    return 0;
}

if (args.Length > 0 && args[0] == "--libfuzzer")
{
    Fuzzer.LibFuzzer.Run(span => FuzzTargets.RunSelected(span));
    return 0;
}

Fuzzer.OutOfProcess.Run(stream =>
{
    using var memory = new MemoryStream();
    stream.CopyTo(memory);
    FuzzTargets.RunSelected(memory.GetBuffer().AsSpan(0, (int)memory.Length));
});
return 0;
