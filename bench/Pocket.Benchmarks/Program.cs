using System.Globalization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace Pocket.Benchmarks;

/// <summary>
/// Entry point: every benchmark class in this assembly, chosen with BenchmarkDotNet's own flags, e.g.
/// <c>dotnet run -c Release --project bench/Pocket.Benchmarks -- --filter '*' --job short</c>;
/// or <c>-- --allocations [OPS]</c> for the types each client request allocates (see <see cref="AllocationProfile"/>);
/// or <c>-- --drain METADATA_ADDRESS METADATA_PID [MIB]</c> for one timed drain (see <see cref="DrainProfile"/>, bench/drain.sh).
/// </summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args is ["--allocations", ..])
        {
            var ops = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 100_000;
            return await AllocationProfile.RunAsync(ops);
        }

        if (args is ["--drain", var address, var pid, ..])
        {
            var objects = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 512;
            return await DrainProfile.RunAsync(address, int.Parse(pid, CultureInfo.InvariantCulture), objects);
        }

        // BenchmarkDotNet builds a project of its own first; its 2-minute default is too short on a busy 2-core machine.
        var config = ManualConfig.Create(DefaultConfig.Instance).WithBuildTimeout(TimeSpan.FromMinutes(15));
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        return 0;
    }
}
