"""`--workers N`: a supervisor process (control plane, admin API) and N data-plane worker processes.

- `supervisor` — binds the listeners, spawns and restarts workers, pushes pools, writes the route word.
- `worker` — one data-plane process: serves its DataPlane, applies what the supervisor sends.
- `channel` — the framed messages between them.
- `routeword` — the route word shared in one memory page, so a flip is one store.
"""
