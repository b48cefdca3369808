using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Pocket.Tests.Network;

/// <summary>
/// A link with delay and loss, made of two TAP devices and this process between them: every Ethernet frame one side
/// sends is held for the delay and then handed to the other side, or dropped with the given probability, in both
/// directions. What <c>tc qdisc ... netem delay 5ms loss 1%</c> does in the kernel; this kernel is built without
/// sch_netem (CONFIG_NET_SCH_NETEM), so the lab emulates the link itself, the same way on every machine.
/// </summary>
internal sealed partial class SlowLink : IDisposable
{
    // Frames are at most the MTU (1500) plus the Ethernet header: without IFF_VNET_HDR the kernel hands a TAP no
    // offloaded super-frames.
    private const int FrameBuffer = 2048;
    private readonly int _outer;
    private readonly int _inner;
    private readonly TimeSpan _delay;
    private readonly double _loss;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Thread> _threads = [];
    private long _forwarded;
    private long _dropped;

    private SlowLink(int outer, int inner, TimeSpan delay, double loss)
    {
        _outer = outer;
        _inner = inner;
        _delay = delay;
        _loss = loss;
    }

    /// <summary>Frames handed on so far.</summary>
    public long Forwarded => Interlocked.Read(ref _forwarded);

    /// <summary>Frames dropped so far.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Creates the two TAP devices (in this process's namespace; either may then be moved to another).</summary>
    public static SlowLink Open(string outerName, string innerName, TimeSpan delay, double loss)
    {
        var outer = OpenTap(outerName);
        int inner;
        try
        {
            inner = OpenTap(innerName);
        }
        catch
        {
            _ = Close(outer);
            throw;
        }

        return new SlowLink(outer, inner, delay, loss);
    }

    /// <summary>Starts moving frames both ways.</summary>
    public void Start()
    {
        Pump(_outer, _inner, "out->in", seed: 1);
        Pump(_inner, _outer, "in->out", seed: 2);
    }

    private void Pump(int from, int to, string name, int seed)
    {
        var queue = new BlockingCollection<(long Due, byte[] Frame, int Length)>();
        var random = new Random(seed);
        var delayTicks = (long)(_delay.TotalSeconds * Stopwatch.Frequency);
        var reader = new Thread(() =>
        {
            var poll = new PollFd { Fd = from, Events = PollIn };
            while (!_stop.IsCancellationRequested)
            {
                poll.Revents = 0;
                if (Poll(ref poll, 1, 100) <= 0)
                {
                    continue;
                }

                var frame = new byte[FrameBuffer];
                var length = Read(from, frame, FrameBuffer);
                if (length <= 0)
                {
                    continue;
                }

                if (random.NextDouble() < _loss)
                {
                    Interlocked.Increment(ref _dropped);
                    continue;
                }

                queue.Add((Stopwatch.GetTimestamp() + delayTicks, frame, (int)length));
            }

            queue.CompleteAdding();
        })
        { IsBackground = true, Name = $"slow link {name} reader" };
        var writer = new Thread(() =>
        {
            try
            {
                foreach (var (due, frame, length) in queue.GetConsumingEnumerable(_stop.Token))
                {
                    // The delay is the same for every frame, so the queue is in order of due time.
                    while (Stopwatch.GetTimestamp() < due)
                    {
                        var left = (due - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency;
                        if (left > 1)
                        {
                            Thread.Sleep((int)left - 1);
                        }
                        else
                        {
                            Thread.SpinWait(100);
                        }
                    }

                    _ = Write(to, frame, (nuint)length);
                    Interlocked.Increment(ref _forwarded);
                }
            }
            catch (OperationCanceledException)
            {
            }
        })
        { IsBackground = true, Name = $"slow link {name} writer" };
        _threads.Add(reader);
        _threads.Add(writer);
        reader.Start();
        writer.Start();
    }

    public void Dispose()
    {
        _stop.Cancel();
        foreach (var thread in _threads)
        {
            thread.Join(TimeSpan.FromSeconds(5));
        }

        // Closing a non-persistent TAP device's descriptor deletes the device.
        _ = Close(_outer);
        _ = Close(_inner);
        _stop.Dispose();
    }

    private static int OpenTap(string name)
    {
        const int ReadWrite = 2;
        const int CloseOnExec = 0x80000;
        const ulong TunSetIff = 0x400454ca;
        const short Tap = 0x0002, NoPacketInfo = 0x1000;
        var fd = Open("/dev/net/tun", ReadWrite | CloseOnExec);
        if (fd < 0)
        {
            throw new InvalidOperationException($"cannot open /dev/net/tun: errno {Marshal.GetLastPInvokeError()}");
        }

        // struct ifreq: the name (16 bytes, NUL-terminated), then the flags (a short) in the union.
        var request = new byte[40];
        Encoding.ASCII.GetBytes(name, request);
        BitConverter.TryWriteBytes(request.AsSpan(16), (short)(Tap | NoPacketInfo));
        if (Ioctl(fd, TunSetIff, request) < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            _ = Close(fd);
            throw new InvalidOperationException($"cannot create TAP device {name}: errno {errno}");
        }

        return fd;
    }

    private const short PollIn = 1;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, ulong request, byte[] argument);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(ref PollFd fds, ulong count, int timeoutMilliseconds);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, byte[] buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, byte[] buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
