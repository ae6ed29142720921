"""sensorflow: per-sensor anomaly detection on Azure, as one Python service."""

__version__ = "0.1.0"
