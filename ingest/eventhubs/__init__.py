"""Live input from Azure Event Hubs: the source, its receivers and Blob checkpoints."""
