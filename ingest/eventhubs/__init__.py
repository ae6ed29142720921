"""Live input from Azure Event Hubs: the source, its receiver process and the receivers (checkpoints: ``sensorflow.windowing.resume``)."""
