"""The gateway's HTTP layer in process, with a stand-in for the RPC client (no broker)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import Settings


class FakeRpc:
    def __init__(self):
        self.calls, self.ready, self.answer = [], True, {}

    async def start(self):
        pass

    async def close(self):
        pass

    async def call(self, rpc, payload, context, timeout=None):
        self.calls.append((rpc, payload, context))
        return self.answer


@pytest.fixture
def gateway():
    rpc = FakeRpc()
    with TestClient(create_app(Settings(), rpc=rpc)) as client:
        client.rpc = rpc
        yield client


def test_smoke(gateway):
    response = gateway.get("/api/v1/me/applications", headers={"Authorization": "Bearer abc.def.ghi"})
    assert response.status_code == 200
    assert gateway.rpc.calls[0][0] == "registration.list_my_applications"
