"""The data plane: the path of a request, in the order a reader walks it.

1. `client` — `ClientConnection`, one per accepted connection: parses the request head (llhttp),
   validates it, reads the RouteTable once and builds the Exchange.
2. `exchange` — `Exchange`, one request/response cycle: picks an endpoint of the pool its snapshot
   named, sends the request, relays the response, retries inside the pool.
3. `upstream` — `UpstreamConnection`, one pooled connection to an endpoint, with its response parser.
4. `pool` — `Pool` and `Endpoint`: balancing, health state, in-flight counts, idle connections, drain.
5. `outbox` — writes held until the loop iteration's events are handled, then one write per connection.
6. `http` — HTTP/1.1 constants and the proxy's own responses.
7. `routes` — `RouteTable`, the immutable snapshot a request reads once, and the route word naming it.
8. `plane` — `DataPlane`: what one event loop serves (listeners, pools, routes, timers).
9. `loop` — the event loop it runs on (uvloop).

Nothing here imports the control plane, workers or the fleet: they drive a DataPlane from above.
"""
