"""bluegreen's edge proxy: listeners, route snapshots, pools, the flip, health checks and the admin API."""
