"""The control plane: what decides which pool serves, and reports it.

- `switch` — `Switch`, the one place that changes routes: it checks the target, owns the
  `DesiredState` and applies it through one callback (in-process data plane, workers or fleet).
- `state` — `DesiredState` (pools, routes, generation) and its one serialised form.
- `health` — `HealthChecker`: active probes; passive ejection lives in the pool.
- `admin` — the admin HTTP API over a `ProxyControl`.
- `metrics` — the Prometheus collector over the data plane's plain counters.
"""
