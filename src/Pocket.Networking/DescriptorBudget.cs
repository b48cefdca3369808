namespace Pocket.Networking;

/// <summary>
/// The process's descriptor budget for connections, for listeners other than the frame servers (the HTTP listeners of
/// the controller and the S3 gateway), so that their connections and the frame servers' together stay within what the
/// open-file limit leaves: past it the runtime cannot start a thread and aborts the process.
/// </summary>
public static class DescriptorBudget
{
    /// <summary>Takes one descriptor for an accepted connection; false (nothing taken) when the accepted connections' budget is spent.</summary>
    public static bool TryTakeAccepted() => ConnectionDescriptors.TryTake();

    /// <summary>Gives back the descriptor of an accepted connection that closed (once per successful take).</summary>
    public static void Return() => ConnectionDescriptors.Return();

    /// <summary>Measures the budget again, as a listener starts: the descriptors it and the process opened since are not the connections'.</summary>
    public static void Refresh() => ConnectionDescriptors.Refresh();
}
