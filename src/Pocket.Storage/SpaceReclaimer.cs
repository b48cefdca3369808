namespace Pocket.Storage;

/// <summary>Settings of a <see cref="SpaceReclaimer"/>.</summary>
public sealed record SpaceReclaimerOptions
{
    /// <summary>The default headroom of a dram node: free memory kept faulted in for the next writes.</summary>
    public const long DefaultDramHeadroom = 256L << 20;

    /// <summary>How long memory stays free before a dram node gives it back to the OS, by default.</summary>
    public static readonly TimeSpan DefaultDramReleaseDelay = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Bytes of free space kept ready for the next writes and never given back: the lowest free space (where the
    /// metadata server allocates next) is faulted in ahead of need. 0 keeps none (ssd and hdd nodes).
    /// </summary>
    public long Headroom { get; init; }

    /// <summary>How long space stays free (and outside the headroom) before it goes back; zero: at once.</summary>
    public TimeSpan ReleaseDelay { get; init; }

    /// <summary>
    /// Unit of tracking and of giving back, a multiple of the block size: a huge page (2 MiB) for memory, so a whole
    /// huge page goes back or none; one block for files.
    /// </summary>
    public long Granularity { get; init; }

    /// <summary>Most bytes one device call gives back, so a write that waits for it never waits long.</summary>
    public long MaxDiscardRun { get; init; } = 64L << 20;

    /// <summary>What a node of a tier gets: dram keeps <paramref name="dramHeadroom"/> and gives memory back after <paramref name="dramReleaseDelay"/>; files punch holes at once.</summary>
    public static SpaceReclaimerOptions For(IBlockDevice device, int blockSize, long dramHeadroom, TimeSpan dramReleaseDelay) =>
        device.IsDirect
            ? new SpaceReclaimerOptions { Headroom = dramHeadroom, ReleaseDelay = dramReleaseDelay, Granularity = Math.Max(blockSize, NativeMemoryDevice.HugePageSize) }
            : new SpaceReclaimerOptions { Headroom = 0, ReleaseDelay = TimeSpan.Zero, Granularity = blockSize };

    public void Validate(int blockSize)
    {
        if (Headroom < 0)
        {
            throw new ArgumentException($"headroom {Headroom} must not be negative");
        }

        if (ReleaseDelay < TimeSpan.Zero)
        {
            throw new ArgumentException($"release delay {ReleaseDelay} must not be negative");
        }

        if (Granularity < blockSize || Granularity % blockSize != 0)
        {
            throw new ArgumentException($"granularity {Granularity} must be a multiple of the block size {blockSize}");
        }

        if (MaxDiscardRun < blockSize)
        {
            throw new ArgumentException($"the largest discard {MaxDiscardRun} must hold at least one block ({blockSize})");
        }
    }
}

/// <summary>
/// Makes a node's memory and disk follow its use. Freed space (<see cref="BlockStore.Forget"/>) goes back to the device
/// (<see cref="IBlockDevice.Discard"/>: memory to the OS, a file's blocks to the file system) once it has stayed free for
/// <see cref="SpaceReclaimerOptions.ReleaseDelay"/>, except the headroom: the lowest free space, where the metadata
/// server allocates next, up to <see cref="SpaceReclaimerOptions.Headroom"/> bytes, which is kept and faulted in ahead of
/// the writes (<see cref="IBlockDevice.Populate"/>). All of it runs on one background thread, woken by forgets, by
/// writes once they have used an eighth of the headroom, and by a timer; nothing of it runs on a request's path except
/// a count after each write.
/// </summary>
public sealed class SpaceReclaimer : IDisposable
{
    private readonly BlockStore _store;
    private readonly SpaceReclaimerOptions _options;
    private readonly TimeProvider _time;
    private readonly long _blocksPerChunk;
    private readonly long _chunkCount;

    // Per chunk: 1 while its memory or disk may be held (written, forgotten or populated), 0 once given back or never
    // touched. Set by the forget hook (any thread) and the worker; read by the worker.
    private readonly byte[] _held;

    // Per chunk: when the worker first saw it free and outside the headroom (0: not so). The worker's alone.
    private readonly long[] _freeSince;
#pragma warning disable CA2213 // left undisposed on purpose (see Dispose)
    private readonly AutoResetEvent _wake = new(false);
#pragma warning restore CA2213
    private readonly Thread _worker;
    private readonly ITimer? _timer;
    private readonly object _waitersLock = new();
    private List<TaskCompletionSource> _waiters = [];
    private volatile bool _disposed;
    private int _writeSignalled;
    private long _writtenSincePass;
    private long _writeWakes;
    private long _discarded;
    private long _populated;
    private long _headroomReady;

    public SpaceReclaimer(BlockStore store, SpaceReclaimerOptions options, TimeProvider? timeProvider = null)
    {
        options.Validate(store.BlockSize);
        _store = store;
        _options = options;
        _time = timeProvider ?? TimeProvider.System;
        _blocksPerChunk = options.Granularity / store.BlockSize;
        _chunkCount = (store.BlockCount + _blocksPerChunk - 1) / _blocksPerChunk;
        _held = new byte[_chunkCount];
        _freeSince = new long[_chunkCount];
        store.Forgot = OnForgot;
        store.WasReset = OnReset;
        if (options.Headroom > 0)
        {
            store.Wrote = OnWrote;
        }

        _worker = new Thread(Run) { IsBackground = true, Name = "pocket space", Priority = ThreadPriority.BelowNormal };
        _worker.Start();
        if (options.ReleaseDelay > TimeSpan.Zero)
        {
            var period = options.ReleaseDelay / 2;
            _timer = _time.CreateTimer(_ => _wake.Set(), null, period, period);
        }

        // The first pass faults the headroom in.
        _ = _wake.Set();
    }

    /// <summary>Bytes given back to the device so far.</summary>
    public long DiscardedBytes => Interlocked.Read(ref _discarded);

    /// <summary>Bytes faulted in ahead of writes so far.</summary>
    public long PopulatedBytes => Interlocked.Read(ref _populated);

    /// <summary>Free bytes at the bottom of the free space that are faulted in now (at most the headroom), as of the last pass.</summary>
    public long HeadroomReadyBytes => Interlocked.Read(ref _headroomReady);

    /// <summary>True once a pass has faulted the whole headroom in (or all free space, when less), until a pass finds it short.</summary>
    public bool HeadroomReady => _headroomIsReady;

    private volatile bool _headroomIsReady;

    /// <summary>The options in force.</summary>
    public SpaceReclaimerOptions Options => _options;

    /// <summary>Runs a pass soon (whatever else woke the worker) and completes when a pass that began after this call ends.</summary>
    public Task RunPassAsync()
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waitersLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _waiters.Add(waiter);
        }

        _ = _wake.Set();
        return waiter.Task;
    }

    /// <summary>
    /// Completes once <see cref="DiscardedBytes"/> reaches <paramref name="bytes"/> (checked after each pass): how a
    /// caller awaits space going back, whenever the forget that frees it arrives.
    /// </summary>
    public Task WaitForDiscardedAsync(long bytes)
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waitersLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (DiscardedBytes >= bytes)
            {
                return Task.CompletedTask;
            }

            _discardWaiters.Add((bytes, waiter));
        }

        return waiter.Task;
    }

    private readonly List<(long Bytes, TaskCompletionSource Waiter)> _discardWaiters = [];

    private void CompleteDiscardWaiters()
    {
        lock (_waitersLock)
        {
            var discarded = DiscardedBytes;
            _discardWaiters.RemoveAll(w => w.Bytes <= discarded && w.Waiter.TrySetResult());
        }
    }

    private void OnForgot(long offset, long length)
    {
        var first = offset / _store.BlockSize / _blocksPerChunk;
        var last = (offset + length - 1) / _store.BlockSize / _blocksPerChunk;
        for (var chunk = first; chunk <= last; chunk++)
        {
            Volatile.Write(ref _held[chunk], 1);
        }

        _ = _wake.Set();
    }

    private void OnReset()
    {
        // Every block is free now, and what was written before is still held.
        for (long chunk = 0; chunk < _chunkCount; chunk++)
        {
            Volatile.Write(ref _held[chunk], 1);
        }

        _ = _wake.Set();
    }

    /// <summary>Bytes written since the last pass that wake the worker to refill the headroom: an eighth of it.</summary>
    private long WakeAfterWritten => Math.Max(_store.BlockSize, _options.Headroom / 8);

    /// <summary>Times writes woke the worker (tests).</summary>
    internal long WriteWakes => Interlocked.Read(ref _writeWakes);

    private void OnWrote(int length)
    {
        // Writes eat into the headroom; once an eighth of it is used, one wake-up refills it. Not one per write: the
        // write's handler calls this before its reply leaves, and on a busy machine the woken worker took the core from
        // the reply (a function's first 64 KiB put waited for it on the node). Seven eighths of the headroom stay ready.
        if (Interlocked.Add(ref _writtenSincePass, length) >= WakeAfterWritten &&
            Volatile.Read(ref _writeSignalled) == 0 && Interlocked.Exchange(ref _writeSignalled, 1) == 0)
        {
            Interlocked.Increment(ref _writeWakes);
            _ = _wake.Set();
        }
    }

    private void Run()
    {
        while (true)
        {
            _ = _wake.WaitOne();
            if (_disposed)
            {
                break;
            }

            List<TaskCompletionSource> waiters;
            lock (_waitersLock)
            {
                waiters = _waiters;
                _waiters = [];
            }

            Interlocked.Exchange(ref _writtenSincePass, 0);
            Volatile.Write(ref _writeSignalled, 0);
            try
            {
                Pass();
            }
            catch (ObjectDisposedException) when (_disposed)
            {
            }
            catch (Exception ex)
            {
                // A device that fails to give space back keeps it; the node goes on serving.
                foreach (var waiter in waiters)
                {
                    waiter.TrySetException(ex);
                }

                continue;
            }

            CompleteDiscardWaiters();
            foreach (var waiter in waiters)
            {
                waiter.TrySetResult();
            }
        }

        lock (_waitersLock)
        {
            foreach (var (_, waiter) in _discardWaiters)
            {
                waiter.TrySetCanceled();
            }

            _discardWaiters.Clear();
            foreach (var waiter in _waiters)
            {
                waiter.TrySetCanceled();
            }

            _waiters.Clear();
        }
    }

    /// <summary>One look at every chunk: free ones outside the headroom go back once free long enough; the headroom is faulted in.</summary>
    private void Pass()
    {
        var now = _time.GetTimestamp();
        var headroomChunks = (_options.Headroom + _options.Granularity - 1) / _options.Granularity;
        var protectedSeen = 0L;
        var toPopulate = new List<long>();
        var ready = 0L;
        for (long chunk = 0; chunk < _chunkCount && !_disposed; chunk++)
        {
            if (!IsChunkFree(chunk))
            {
                _freeSince[chunk] = 0;
                continue;
            }

            if (protectedSeen < headroomChunks)
            {
                // The lowest free chunks: where the next allocations land. Kept, and faulted in if they are not yet.
                protectedSeen++;
                _freeSince[chunk] = 0;
                if (Volatile.Read(ref _held[chunk]) == 0)
                {
                    toPopulate.Add(chunk);
                }
                else
                {
                    ready += ChunkBytes(chunk);
                }

                continue;
            }

            if (Volatile.Read(ref _held[chunk]) == 0)
            {
                continue;
            }

            if (_freeSince[chunk] == 0 && _options.ReleaseDelay > TimeSpan.Zero)
            {
                _freeSince[chunk] = now;
                continue;
            }

            if (_options.ReleaseDelay == TimeSpan.Zero || _time.GetElapsedTime(_freeSince[chunk], now) >= _options.ReleaseDelay)
            {
                Release(chunk);
            }
        }

        Interlocked.Exchange(ref _headroomReady, ready);
        _headroomIsReady = toPopulate.Count == 0;
        foreach (var chunk in toPopulate)
        {
            if (_disposed)
            {
                return;
            }

            // Marked held first: a forget or discard that races with the populate only ever errs toward another look.
            Volatile.Write(ref _held[chunk], 1);
            _store.Device.Populate(chunk * _options.Granularity, ChunkBytes(chunk));
            Interlocked.Add(ref _populated, ChunkBytes(chunk));
            Interlocked.Add(ref _headroomReady, ChunkBytes(chunk));
        }

        _headroomIsReady = true;
    }

    private void Release(long chunk)
    {
        // Cleared before the discard: a forget in the chunk meanwhile sets it again, so it is looked at again.
        Volatile.Write(ref _held[chunk], 0);
        _freeSince[chunk] = 0;
        var discarded = _store.DiscardFree(chunk * _blocksPerChunk, _blocksPerChunk, Math.Max(1, _options.MaxDiscardRun / _store.BlockSize));
        Interlocked.Add(ref _discarded, discarded);
        if (discarded < ChunkBytes(chunk))
        {
            // Part of it was taken meanwhile (or the device keeps its space): still held.
            Volatile.Write(ref _held[chunk], 1);
        }
    }

    private long ChunkBytes(long chunk) => Math.Min(_options.Granularity, _store.Capacity - (chunk * _options.Granularity));

    private bool IsChunkFree(long chunk)
    {
        var end = Math.Min((chunk + 1) * _blocksPerChunk, _store.BlockCount);
        for (var block = chunk * _blocksPerChunk; block < end; block++)
        {
            if (!_store.IsFree(block))
            {
                return false;
            }
        }

        return true;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        lock (_waitersLock)
        {
            _disposed = true;
        }

        _timer?.Dispose();
        _store.Forgot = null;
        _store.Wrote = null;
        _store.WasReset = null;
        _ = _wake.Set();
        _worker.Join();

        // The event is left to the finalizer: a hook already running on a request's thread may still set it.
    }
}
