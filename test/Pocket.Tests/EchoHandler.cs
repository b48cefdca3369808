using Pocket.Networking;
using Pocket.Protocol;
using static Pocket.Tests.TestSupport;

namespace Pocket.Tests;

/// <summary>Answers every frame with its body, or, for a 4-byte body N, with the first N bytes of <see cref="Large"/> (a large reply on demand).</summary>
internal sealed class EchoHandler : IFrameHandler
{
    public static readonly byte[] Large = RandomBytes(1 << 20, seed: 11);

    public void Handle(FrameContext frame)
    {
        var body = frame.ReadBody();
        if (body.Length == 4)
        {
            frame.Reply(Status.Ok, Large.AsSpan(0, Math.Min(BitConverter.ToInt32(body), Large.Length)));
            return;
        }

        frame.Reply(Status.Ok, body);
    }

    public void OnDisconnected(FrameContext connection)
    {
    }
}
