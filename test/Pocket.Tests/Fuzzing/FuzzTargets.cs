using System.Text;
using Pocket.Protocol;
using Pocket.Protocol.Messages;

namespace Pocket.Fuzzing;

/// <summary>A decoder under fuzzing: any input must give an answer (a status, a failed reader), never an exception.</summary>
internal delegate void FuzzTarget(ReadOnlySpan<byte> input);

/// <summary>An invariant a fuzz target found broken; the fuzzers report it as a crash.</summary>
internal sealed class FuzzInvariantException(string message) : Exception(message);

/// <summary>
/// Every decoder of the protocol, each fed arbitrary bytes, with the invariants that must hold after it. Shared by the
/// bounded CsCheck properties of the test suite and the coverage-guided harness in fuzz/Pocket.Fuzz (which picks a
/// target by the input's first byte). A new decoder is one line in <see cref="All"/>.
/// </summary>
internal static class FuzzTargets
{
    public static readonly IReadOnlyList<(string Name, FuzzTarget Run)> All =
    [
        ("frame-header", FrameHeaderTarget),
        ("body-reader", BodyReaderTarget),
        ("extent-grant", ExtentGrantTarget),
        ("object-key", ObjectKeyTarget),
        ("job-token", input => _ = JobToken.Read(input.Length >= JobToken.Size ? input[..JobToken.Size] : new byte[JobToken.Size])),

        // The message decoders (Pocket.Protocol.Messages); an accepted message's lazily read parts are read too.
        ("abort-request", input => _ = AbortRequest.TryRead(input, out _)),
        ("allocate-request", input => _ = AllocateRequest.TryRead(input, out _)),
        ("allocate-reply", input => _ = AllocateReply.TryRead(input, out var grants) && ReadAll(grants)),
        ("commit-request", input => _ = CommitRequest.TryRead(input, out _)),
        ("count-request", input => _ = CountRequest.TryRead(input, out _)),
        ("count-reply", input => _ = CountReply.TryRead(input, out _)),
        ("create-request", input => _ = CreateRequest.TryRead(input, out _)),
        ("create-reply", input => _ = CreateReply.TryRead(input, out var reply) && ReadAll(reply.Grants)),
        ("delete-request", input => _ = DeleteRequest.TryRead(input, out _)),
        ("delete-reply", input => _ = DeleteReply.TryRead(input, out _)),
        ("deregister-job-request", input => _ = DeregisterJobRequest.TryRead(input, out _)),
        ("deregister-job-reply", input => _ = DeregisterJobReply.TryRead(input, out _)),
        ("write-extent-head", input => _ = WriteExtentRequest.TryRead(input, out _, out _)),
        ("read-extent-request", input => _ = ReadExtentRequest.TryRead(input, out _, out _, out _)),
        ("get-request", input => _ = GetRequest.TryRead(input, out _)),
        ("get-reply", input => _ = GetReply.TryRead(input, out var reply) && ReadAll(reply.Grants)),
        ("heartbeat-request", input => _ = HeartbeatRequest.TryRead(input, out _)),
        ("job-stats-request", input => _ = JobStatsRequest.TryRead(input, out _)),
        ("job-stats-reply", input => _ = JobStatsReply.TryRead(input, out _)),
        ("list-request", input => _ = ListRequest.TryRead(input, out _)),
        ("list-reply", ListReplyTarget),
        ("list-nodes-reply", input => _ = ListNodesReply.TryRead(input, out _)),
        ("lookup-request", input => _ = LookupRequest.TryRead(input, out _)),
        ("lookup-reply", LookupReplyTarget),
        ("drain-node-request", input => _ = DrainNodeRequest.TryRead(input, out _)),
        ("activate-node-request", input => _ = ActivateNodeRequest.TryRead(input, out _)),
        ("put-small-request", input => _ = PutSmallRequest.TryRead(input, out _)),
        ("register-job-request", input => _ = RegisterJobRequest.TryRead(input, out _)),
        ("register-job-reply", input => _ = RegisterJobReply.TryRead(input, out _)),
        ("register-node-request", input => _ = RegisterNodeRequest.TryRead(input, out _)),
        ("register-node-reply", input => _ = RegisterNodeReply.TryRead(input, out _)),
        ("set-weights-request", input => _ = SetWeightsRequest.TryRead(input, out _)),
        ("copy-extent-request", input => _ = CopyExtentRequest.TryRead(input, out _)),
    ];

    /// <summary>Runs the target that <paramref name="input"/>'s first byte selects on the rest (the harness's entry).</summary>
    public static void RunSelected(ReadOnlySpan<byte> input)
    {
        if (input.Length == 0)
        {
            return;
        }

        All[input[0] % All.Count].Run(input[1..]);
    }

    private static void Check(bool condition, string what)
    {
        if (!condition)
        {
            throw new FuzzInvariantException(what);
        }
    }

    private static void FrameHeaderTarget(ReadOnlySpan<byte> input)
    {
        var limits = ProtocolLimits.Default;
        var status = FrameHeader.TryRead(input, limits.MaxAnyBody, out var header);
        if (status != Status.Ok)
        {
            Check(header == default, "a refused header must come back empty");
            return;
        }

        // An accepted header is exactly its 32 bytes: writing it back gives them again.
        Check(input.Length >= FrameHeader.Size && header.BodyLength >= 0 && header.BodyLength <= limits.MaxAnyBody, "accepted header out of bounds");
        Span<byte> again = stackalloc byte[FrameHeader.Size];
        header.Write(again);
        Check(again.SequenceEqual(input[..FrameHeader.Size]), "header does not round-trip");
    }

    // The input drives a sequence of reads, as a message decoder would make them; none may throw, and a failed
    // reader stays failed with nothing consumed past its end.
    private static void BodyReaderTarget(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty)
        {
            return;
        }

        var script = input[..Math.Min(16, input.Length)];
        var reader = new BodyReader(input[script.Length..]);
        var failed = false;
        foreach (var step in script)
        {
            var before = reader.Remaining;
            switch (step % 12)
            {
                case 0: reader.U8(); break;
                case 1: reader.U16(); break;
                case 2: reader.U32(); break;
                case 3: reader.I32(); break;
                case 4: reader.U64(); break;
                case 5: reader.I64(); break;
                case 6: reader.F64(); break;
                case 7: reader.Blob(); break;
                case 8: reader.Str(); break;
                case 9: reader.StrUtf8(); break;
                case 10: reader.Token(); break;
                default: reader.Bytes(step >> 4); break;
            }

            Check(reader.Remaining >= 0 && reader.Remaining <= before, "reader moved backwards or past its end");
            Check(!failed || reader.Failed, "a failed reader recovered");
            failed = reader.Failed;
        }
    }

    private static void ExtentGrantTarget(ReadOnlySpan<byte> input)
    {
        if (input.Length < ExtentGrant.Size)
        {
            return;
        }

        var grant = ExtentGrant.Read(input);
        Span<byte> again = stackalloc byte[ExtentGrant.Size];
        grant.Write(again);
        Check(again.SequenceEqual(input[..ExtentGrant.Size]), "grant does not round-trip");

        // A grant made of arbitrary bytes never verifies against a secret it was not signed with.
        Span<byte> secret = stackalloc byte[32];
        secret.Fill(0x5a);
        Check(!grant.Verify(secret) || grant == ExtentGrant.Sign(secret, grant.NodeId, grant.Generation, grant.Offset, grant.Length, grant.Rights), "an unsigned grant verified");
    }

    private static void ObjectKeyTarget(ReadOnlySpan<byte> input)
    {
        var key = Encoding.UTF8.GetString(input);
        var limits = ProtocolLimits.Default;
        var valid = ObjectKey.IsValid(key, limits, out var error);
        Check(valid == (error.Length == 0), "a key's verdict and its error disagree");
        Check(!valid || Encoding.UTF8.GetByteCount(key) <= limits.MaxKeyBytes, "an over-long key passed");
        _ = ObjectKey.IsValidPrefix(key, limits, out _);
    }

    private static bool ReadAll(GrantList grants)
    {
        for (var i = 0; i < grants.Count; i++)
        {
            _ = grants[i];
        }

        return true;
    }

    // An accepted reply's entries were checked once: enumerating them must give exactly Count entries.
    private static void ListReplyTarget(ReadOnlySpan<byte> input)
    {
        if (!ListReply.TryRead(input, out var reply))
        {
            return;
        }

        var count = 0;
        foreach (var entry in reply)
        {
            count++;
        }

        Check(count == reply.Count, "a list reply enumerates a different number of entries than it counts");
    }

    private static void LookupReplyTarget(ReadOnlySpan<byte> input)
    {
        if (!LookupReply.TryRead(input, out var reply))
        {
            return;
        }

        for (var i = 0; i < reply.Count; i++)
        {
            _ = reply[i];
        }
    }
}
