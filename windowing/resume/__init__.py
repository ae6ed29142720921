"""Resuming: what Bytewax recovery state belongs to, and the live-resume protocol from Blob checkpoints.

``identity`` names what a recovery directory's state was made from (the input, the store, the
window settings) and ``recovery_dir`` checks a directory against a run before Bytewax opens it,
refusing state that belongs to another run or files that are not state (``--fresh`` starts
over). The assembly layer calls it for replays and live runs alike.

The live-resume protocol: where a live run can restart from Blob checkpoints without Bytewax state.

``board`` is the pure logic (resume logs, committed windows, the :class:`ResumeBoard` the dataflow
reports to); ``checkpoints`` writes and loads it beside the Event Hubs checkpoints (``blobs`` is
the blob layout, ``offsets`` the Event Hubs offsets a checkpoint names). The dataflow takes the
board as its one optional hook (``build_flow(..., board)``); replays never use it.
docs/eventhubs.md has the argument.
"""
