"""Where data enters: recorded or live messages, decoded into columnar reading batches."""
