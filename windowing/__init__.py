"""Where data is transformed: event-time tumbling windows over reading batches, written to SQL."""
