using BenchmarkDotNet.Attributes;
using Pocket.Protocol;

namespace Pocket.Benchmarks;

/// <summary>
/// What every request pays in the protocol assembly: the 32-byte frame header, the body of a Get request
/// (key, offset, length: the most common metadata request) written the way the client writes it and read
/// the way the metadata server reads it.
/// </summary>
[MemoryDiagnoser]
public class ProtocolBenchmarks
{
    private const string Key = "shuffle/stage-1/part-00042";

    private readonly byte[] _header = new byte[FrameHeader.Size];
    private readonly FrameHeader _frame = new(Opcode.Get, FrameFlags.None, Status.Ok, 44, 12345, new JobToken(0x0123456789abcdef, 0xfedcba9876543210));
    private readonly BodyWriter _reused = new();
    private byte[] _getBody = [];

    [GlobalSetup]
    public void Setup()
    {
        _frame.Write(_header);
        _getBody = new BodyWriter().Str(Key).I64(0).I64(-1).ToArray();
    }

    [Benchmark]
    public void FrameHeaderWrite() => _frame.Write(_header);

    [Benchmark]
    public int FrameHeaderTryRead() => FrameHeader.TryRead(_header, 1 << 20, out var header) == Status.Ok ? header.BodyLength : -1;

    /// <summary>As the client does it today: a new writer (and its 256-byte buffer) per request.</summary>
    [Benchmark]
    public int GetRequestWriteNew() => new BodyWriter().Str(Key).I64(0).I64(-1).Length;

    /// <summary>The same body into a writer that is reset and reused: the floor for the encoding itself.</summary>
    [Benchmark]
    public int GetRequestWriteReused()
    {
        _reused.Reset();
        return _reused.Str(Key).I64(0).I64(-1).Length;
    }

    /// <summary>As the metadata server reads it: the key becomes a string (its dictionary key).</summary>
    [Benchmark]
    public long GetRequestRead()
    {
        var reader = new BodyReader(_getBody);
        var key = reader.Str();
        var offset = reader.I64();
        var length = reader.I64();
        return reader.Failed ? -1 : key.Length + offset + length;
    }
}
