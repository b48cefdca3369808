namespace Pocket.Protocol.Messages;

/// <summary>
/// A metadata server's load as counters since it started (the reader takes differences between two readings, so
/// neither side keeps an interval): the CPU time its process has used, how long it has run (a monotonic clock, the
/// same one the CPU time is measured against), the job requests it has handled (opcodes 20-29 with a job token:
/// the namespace work, not the controller's polls or the nodes' heartbeats) and the processors the process may use.
/// </summary>
/// <param name="CpuSeconds">Processor time used by the server's process (user and kernel, every thread).</param>
/// <param name="UptimeSeconds">Seconds since the server started, on a monotonic clock.</param>
/// <param name="JobRequests">Job requests handled since it started.</param>
/// <param name="Processors">Processors the process may run on (a fraction of the host is CPU / uptime / processors).</param>
public readonly record struct ServerLoad(double CpuSeconds, double UptimeSeconds, long JobRequests, int Processors)
{
    /// <summary>
    /// Objects the server still holds: those of its live jobs and the keep-after-job objects of ended ones, in blocks
    /// or inline. A drained server is empty only when this is 0, since inline objects hold no node's blocks.
    /// </summary>
    public long HeldObjects { get; init; }

    /// <summary>Bytes of objects held inline by the server itself (counted in <see cref="HeldObjects"/>, not in any node's use).</summary>
    public long HeldInlineBytes { get; init; }
}

/// <summary>
/// ServerLoad's reply (the request body is empty; the cluster token is needed): cpu seconds f64, uptime seconds f64,
/// job requests i64, processors u16, held objects i64, held inline bytes i64.
/// </summary>
public static class ServerLoadReply
{
    public const int Size = (sizeof(double) * 2) + (sizeof(long) * 3) + sizeof(ushort);

    public static void Write(BodyWriter body, in ServerLoad load) =>
        body.F64(load.CpuSeconds).F64(load.UptimeSeconds).I64(load.JobRequests).U16((ushort)Math.Clamp(load.Processors, 1, ushort.MaxValue))
            .I64(load.HeldObjects).I64(load.HeldInlineBytes);

    public static bool TryRead(ReadOnlySpan<byte> body, out ServerLoad load)
    {
        var reader = new BodyReader(body);
        load = new ServerLoad(reader.F64(), reader.F64(), reader.I64(), reader.U16()) { HeldObjects = reader.I64(), HeldInlineBytes = reader.I64() };
        return !reader.Failed && reader.AtEnd && load.Processors > 0 && double.IsFinite(load.CpuSeconds) && double.IsFinite(load.UptimeSeconds)
            && load.CpuSeconds >= 0 && load.UptimeSeconds >= 0 && load.JobRequests >= 0 && load.HeldObjects >= 0 && load.HeldInlineBytes >= 0;
    }
}
