"""The ground floor: what flows between the layers, as Arrow schemas and frozen dataclasses.

Message and reading batches (``readings``), closed windows (``windows``), dead letters and their
reason codes (``dead_letters``), predictions (``predictions``), sidecar runs (``runs``) and the
time formats of the contracts (``timeparse``). Imports nothing of ours.
"""
