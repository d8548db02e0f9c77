"""The proxy's small control interface and its transports (in-process and over the admin API)."""
