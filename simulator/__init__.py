"""bluegreen's simulator: Kubernetes in miniature with an Argo-Rollouts-compatible blue/green controller."""
