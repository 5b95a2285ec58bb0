"""Prometheus metrics: business metrics read from the store at scrape time, and self metrics."""
