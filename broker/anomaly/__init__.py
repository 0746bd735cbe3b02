"""Anomaly detection: detectors (pure), the monitor that records findings, and canaries."""
