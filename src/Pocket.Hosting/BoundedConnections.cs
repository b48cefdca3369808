using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Pocket.Hosting;

/// <summary>
/// Kestrel's socket transport, accepting only while fewer than a bound of its connections are open: the next connect
/// waits in the kernel's listen backlog, not in a descriptor of the process. 300 connects held open by one peer on a
/// metadata server's metrics port (open-file limit 256) aborted the process ("Out of memory.": the runtime could not
/// start a thread), and still did with Kestrel's own limit (<c>MaxConcurrentConnections</c> 16), which accepts a
/// connection before it refuses it and logged a warning for each. The binary-protocol servers keep their connections
/// within the process's descriptor budget themselves; this keeps a Kestrel listener beside them within its bound.
/// </summary>
public static class BoundedConnections
{
    /// <summary>How often a listener whose process has spent its descriptor budget looks again.</summary>
    private static readonly TimeSpan BudgetRetry = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Makes Kestrel in <paramref name="services"/> accept at most <paramref name="limit"/> connections at once, per
    /// listener, and, with <paramref name="budget"/>, only while the process's descriptor budget has room (each
    /// connection takes one from it and gives it back when closed).
    /// </summary>
    public static IServiceCollection AddBoundedSocketTransport(this IServiceCollection services, int limit, Budget? budget = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(limit);
        services.RemoveAll<IConnectionListenerFactory>();
        services.AddSingleton<IConnectionListenerFactory>(provider => new Factory(
            new SocketTransportFactory(provider.GetRequiredService<IOptions<SocketTransportOptions>>(), provider.GetRequiredService<ILoggerFactory>()),
            limit,
            budget));
        return services;
    }

    /// <summary>A descriptor budget shared with other listeners: take one (false when spent), give one back, measure it again (once bound).</summary>
    public sealed record Budget(Func<bool> TryTake, Action Return, Action Refresh);

    private sealed class Factory(IConnectionListenerFactory inner, int limit, Budget? budget) : IConnectionListenerFactory
    {
        public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
        {
            var bound = await inner.BindAsync(endpoint, cancellationToken).ConfigureAwait(false);
            budget?.Refresh();
            return new Listener(bound, limit, budget);
        }
    }

    private sealed class Listener(IConnectionListener inner, int limit, Budget? budget) : IConnectionListener
    {
        private readonly SemaphoreSlim _slots = new(limit, limit);

        // Unbinding ends an accept that waits for a slot or for the budget with null, as the inner listener's own
        // accept ends: the budget may be held by other servers' connections, which this one's stop does not close.
        private readonly CancellationTokenSource _unbound = new();

        public EndPoint EndPoint => inner.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            using var waiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
            try
            {
                await _slots.WaitAsync(waiting.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return null;
            }

            // The process's budget is spent only while its connections hold every descriptor it leaves them: rare, and
            // then the next connect waits in the backlog until one closes.
            while (budget is not null && !budget.TryTake())
            {
                try
                {
                    await Task.Delay(BudgetRetry, waiting.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    ReleaseSlot();
                    return null;
                }
            }

            ConnectionContext? accepted;
            try
            {
                accepted = await inner.AcceptAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                GiveBack();
                throw;
            }

            if (accepted is null)
            {
                GiveBack();
                return null;
            }

            return new Slot(accepted, GiveBack);
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _unbound.Cancel();
            return inner.UnbindAsync(cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            _unbound.Cancel();
            await inner.DisposeAsync().ConfigureAwait(false);
            _slots.Dispose();
        }

        private void GiveBack()
        {
            budget?.Return();
            ReleaseSlot();
        }

        private void ReleaseSlot()
        {
            try
            {
                _slots.Release();
            }
            catch (ObjectDisposedException)
            {
                // The listener is gone: nothing waits for the slot.
            }
        }
    }

    /// <summary>An accepted connection that gives its slot back once Kestrel has disposed of it (its socket closed).</summary>
    private sealed class Slot(ConnectionContext inner, Action giveBack) : ConnectionContext
    {
        private int _released;

        public override string ConnectionId { get => inner.ConnectionId; set => inner.ConnectionId = value; }

        public override IFeatureCollection Features => inner.Features;

        public override IDictionary<object, object?> Items { get => inner.Items; set => inner.Items = value; }

        public override IDuplexPipe Transport { get => inner.Transport; set => inner.Transport = value; }

        public override CancellationToken ConnectionClosed { get => inner.ConnectionClosed; set => inner.ConnectionClosed = value; }

        public override EndPoint? LocalEndPoint { get => inner.LocalEndPoint; set => inner.LocalEndPoint = value; }

        public override EndPoint? RemoteEndPoint { get => inner.RemoteEndPoint; set => inner.RemoteEndPoint = value; }

        public override void Abort(ConnectionAbortedException abortReason) => inner.Abort(abortReason);

        public override void Abort() => inner.Abort();

        public override async ValueTask DisposeAsync()
        {
            try
            {
                await inner.DisposeAsync().ConfigureAwait(false);
            }
            finally
            {
                if (Interlocked.Exchange(ref _released, 1) == 0)
                {
                    giveBack();
                }
            }
        }
    }
}
