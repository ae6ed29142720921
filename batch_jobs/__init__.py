"""Where models are made: the sidecar plans train and score runs over new windows, executors run
their tasks (a local pool or Azure Batch), detectors fit and score one model per sensor, the
model store keeps them."""
