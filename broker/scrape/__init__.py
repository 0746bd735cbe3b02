"""The /metrics edge: Prometheus's scraper reaches the broker's metrics over mutual TLS, as a
principal with the scraper role, checked by the same identity code as the gRPC edge."""
