"""Web: the simulator's HTTP API, the dashboard (with its static files), server-sent events and the API client."""
