using System.Net;
using System.Net.Sockets;
using CsCheck;
using Pocket.Admin;
using Pocket.Embedded;
using Pocket.Fuzzing;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests.Fuzzing;

/// <summary>
/// A bounded fuzz run in every test run: CsCheck feeds each decoder of <see cref="FuzzTargets"/> random and
/// shrunk-on-failure bytes, the corpus and the kept findings under fuzz/ replay as regression tests, and both server
/// roles take random frames over real sockets and keep serving with stored data intact. The long, coverage-guided runs
/// are fuzz/Pocket.Fuzz (docs/fuzzing.md).
/// </summary>
public sealed class FuzzProperties
{
    public static TheoryData<string> Targets => [.. FuzzTargets.All.Select(t => t.Name)];

    private static FuzzTarget TargetNamed(string name) => FuzzTargets.All.Single(t => t.Name == name).Run;

    [Theory]
    [MemberData(nameof(Targets))]
    public void RandomBytesNeverBreakADecoder(string target)
    {
        var run = TargetNamed(target);
        Gen.Byte.Array[0, 300].Sample(bytes => run(bytes), iter: 20_000);
    }

    [Fact]
    public void HeaderShapedBytesNeverBreakTheHeaderDecoder()
    {
        // Most random bytes fail on the version byte: this generator gets past it to the length and reserved checks.
        var header = Gen.Select(Gen.Byte.Array[FrameHeader.Size], Gen.Int[0, 1 << 27], Gen.UShort[0, 2], (bytes, length, reserved) =>
        {
            bytes[0] = FrameHeader.CurrentVersion;
            BitConverter.TryWriteBytes(bytes.AsSpan(6), reserved);
            BitConverter.TryWriteBytes(bytes.AsSpan(8), length);
            return bytes;
        });
        var run = TargetNamed("frame-header");
        header.Sample(bytes => run(bytes), iter: 20_000);
    }

    public static TheoryData<string> CorpusFiles
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var file in Directory.EnumerateFiles(FuzzDirectory(), "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".md", StringComparison.Ordinal) && (f.Contains("corpus", StringComparison.Ordinal) || f.Contains("findings", StringComparison.Ordinal))).Order(StringComparer.Ordinal))
            {
                data.Add(Path.GetRelativePath(FuzzDirectory(), file));
            }

            return data;
        }
    }

    /// <summary>Every corpus input and every kept finding, through the harness's entry (first byte picks the target).</summary>
    [Theory]
    [MemberData(nameof(CorpusFiles))]
    public void CorpusAndFindingsReplay(string file) => FuzzTargets.RunSelected(File.ReadAllBytes(Path.Combine(FuzzDirectory(), file)));

    [Fact]
    public void TheCorpusHasAnInputForEveryTarget()
    {
        var firstBytes = Directory.EnumerateFiles(Path.Combine(FuzzDirectory(), "corpus")).Select(f => File.ReadAllBytes(f)).Where(b => b.Length > 0).Select(b => b[0] % FuzzTargets.All.Count).ToHashSet();
        Assert.Equal(Enumerable.Range(0, FuzzTargets.All.Count), firstBytes.Order());
    }

    public static TheoryData<string> Servers => ["metadata", "storage"];

    /// <summary>
    /// Random frames (real opcodes and unknown ones, no token, the job's token or a random one, bodies of random bytes)
    /// sent to a running server over one socket at a time: each gets a reply or a closed connection, and afterwards the
    /// server serves and the stored objects read back unchanged.
    /// </summary>
    [Theory]
    [MemberData(nameof(Servers))]
    public async Task RandomFramesOverASocketLeaveTheServerServing(string server)
    {
        await using var cluster = await StartClusterAsync(nodes: 1);
        await using var client = await cluster.ConnectAsync();
        using var cts = Timeout(120);
        var job = await cluster.Admin(client).RegisterJobAsync("target", cts.Token);
        var stored = new Dictionary<string, string>();
        foreach (var (key, size) in new[] { ("inline", 700), ("blocks", (2 << 20) + 3) })
        {
            var data = DataFor(key, size);
            await job.PutAsync(key, data, cancellationToken: cts.Token);
            stored[key] = Hash(data);
        }

        var endPoint = server == "metadata" ? cluster.Metadata.EndPoint : cluster.Nodes[0]!.EndPoint;
        var opcodes = Enum.GetValues<Opcode>().Select(o => (byte)o).Append((byte)0).Append((byte)250).ToArray();
        var frames = Gen.Select(Gen.OneOf(opcodes), Gen.Int[0, 2], Gen.Byte.Array[0, 600], Gen.UShort[0, 3], (opcode, tokenKind, body, flags) =>
        {
            var token = tokenKind switch { 0 => default, 1 => job.Token, _ => JobToken.NewRandom() };
            return (byte[])[.. Header((Opcode)opcode, body.Length, requestId: 9, token: token, flags: (FrameFlags)flags), .. body];
        });

        Socket? socket = null;
        try
        {
            frames.Sample(
                frame =>
                {
                    socket ??= Connect(endPoint);
                    if (!Exchange(socket, frame))
                    {
                        socket.Dispose();
                        socket = null;
                    }
                },
                iter: 300,
                threads: 1);
        }
        finally
        {
            socket?.Dispose();
        }

        foreach (var (key, hash) in stored)
        {
            Assert.Equal(hash, Hash(await job.GetAsync(key, cancellationToken: cts.Token)));
        }

        var fresh = DataFor("after", 3 << 20);
        await job.PutAsync("after", fresh, cancellationToken: cts.Token);
        Assert.Equal(Hash(fresh), Hash(await job.GetAsync("after", cancellationToken: cts.Token)));
    }

    private static Socket Connect(IPEndPoint endPoint)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 30_000, SendTimeout = 30_000 };
        socket.Connect(new IPEndPoint(IPAddress.Loopback, endPoint.Port));
        return socket;
    }

    /// <summary>Sends a frame and reads its reply; false when the server closed the connection (also an answer).</summary>
    private static bool Exchange(Socket socket, byte[] frame)
    {
        try
        {
            socket.Send(frame);
            var header = new byte[FrameHeader.Size];
            if (!ReadExactly(socket, header))
            {
                return false;
            }

            Assert.Equal(Status.Ok, FrameHeader.TryRead(header, int.MaxValue, out var reply));
            Assert.True(reply.IsReply, "a server frame must carry the reply flag");
            return ReadExactly(socket, new byte[reply.BodyLength]);
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown)
        {
            return false;
        }
    }

    private static bool ReadExactly(Socket socket, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            var read = socket.Receive(buffer);
            if (read == 0)
            {
                return false;
            }

            buffer = buffer[read..];
        }

        return true;
    }

    private static string FuzzDirectory()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            var fuzz = Path.Combine(directory.FullName, "fuzz");
            if (Directory.Exists(Path.Combine(fuzz, "corpus")))
            {
                return fuzz;
            }
        }

        throw new DirectoryNotFoundException($"no fuzz/corpus above {AppContext.BaseDirectory}");
    }
}
