"""Rollouts: the typed spec, the InvalidSpec checks, the pure reconcile plan, the controller and the `get` tree."""
