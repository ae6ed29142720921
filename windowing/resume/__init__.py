"""The live-resume protocol: where a live run can restart from Blob checkpoints without Bytewax state.

``board`` is the pure logic (resume logs, committed windows, the :class:`ResumeBoard` the dataflow
reports to); ``checkpoints`` writes and loads it beside the Event Hubs checkpoints (``blobs`` is
the blob layout, ``offsets`` the Event Hubs offsets a checkpoint names). The dataflow takes the
board as its one optional hook (``build_flow(..., board)``); replays never use it.
docs/eventhubs.md has the argument.
"""
