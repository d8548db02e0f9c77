"""Workloads: the demo app every pod runs, pod runtimes, the kubelet and the ReplicaSet controller."""
