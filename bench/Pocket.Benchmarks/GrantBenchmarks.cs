using BenchmarkDotNet.Attributes;
using Pocket.Protocol;

namespace Pocket.Benchmarks;

/// <summary>
/// The metadata server signs one grant per extent of every large get and put; the storage node verifies
/// one per WriteExtent/ReadExtent (HMAC-SHA256 over 24 bytes).
/// </summary>
[MemoryDiagnoser]
public class GrantBenchmarks
{
    private readonly byte[] _secret = new byte[32];
    private ExtentGrant _grant;

    [GlobalSetup]
    public void Setup()
    {
        Random.Shared.NextBytes(_secret);
        _grant = ExtentGrant.Sign(_secret, 3, 17, 64L << 20, 1 << 20, GrantRights.Read | GrantRights.Write, 1_900_000_000_000);
    }

    [Benchmark]
    public ExtentGrant Sign() => ExtentGrant.Sign(_secret, 3, 17, 64L << 20, 1 << 20, GrantRights.Read | GrantRights.Write, 1_900_000_000_000);

    [Benchmark]
    public bool Verify() => _grant.Verify(_secret);
}
