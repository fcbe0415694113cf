"""The control plane's HTTP port: Prometheus metrics and the dashboard."""
