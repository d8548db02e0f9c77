"""The fake must behave like the contract it stands in for, or the binding tests prove nothing."""

from __future__ import annotations

import pytest

from proxy.control.api import ConflictError, NotFoundError, ProxyControl
from tests.simulator.fake_proxy import FakeProxy


async def test_switch_contract() -> None:
    proxy = FakeProxy()
    assert isinstance(proxy, ProxyControl)
    with pytest.raises(ConflictError):
        await proxy.switch("green")
    assert (await proxy.switch("green", force=True)).generation == 2
    await proxy.set_endpoints("blue", ["10.0.0.1:8080"])
    routes = await proxy.switch("blue")
    assert (routes.active, routes.preview, routes.generation) == ("blue", "green", 3)
    assert await proxy.switch("blue", "green") is routes  # equal routes: no change, no generation bump
    with pytest.raises(ConflictError):
        await proxy.switch("blue", generation=1)
    with pytest.raises(NotFoundError):
        await proxy.switch("red", force=True)
    with pytest.raises(ConflictError):
        await proxy.delete_pool("blue")
