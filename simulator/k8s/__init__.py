"""Kubernetes objects and their store: metadata, specs and statuses in Argo's shape, the clock, field parsing."""
