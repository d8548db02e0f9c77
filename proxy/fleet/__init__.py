"""A fleet of proxies sharing one desired state through etcd.

- `member` — `Fleet`: this proxy's membership (state key, acknowledgements under a lease, fencing).
- `etcd` — a small client of etcd's v3 JSON gateway (range, put, transactions, watch, leases).
"""
