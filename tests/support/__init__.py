"""Test support shared by every test package: ports, waiting for a condition, child processes.

- `free_port()`: a loopback port for a server another process will bind, never handed out twice.
- `wait_until(predicate)`: poll a condition instead of sleeping for a guessed time (`wait_until_sync`
  in a test without an event loop).
- `Process`: a child process on the running event loop (start, wait for a port, stop) that never
  blocks the loop, so the test's own servers (upstreams, the embedded proxy) keep serving meanwhile.
"""

from tests.support.ports import free_port
from tests.support.processes import REPO, Process, child_pids, wait_for_port
from tests.support.waiting import wait_until, wait_until_sync

__all__ = ["REPO", "Process", "child_pids", "free_port", "wait_for_port", "wait_until", "wait_until_sync"]
