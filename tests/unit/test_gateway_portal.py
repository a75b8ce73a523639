"""The web portal's files as the gateway serves them (services/gateway/portal.py): same origin at
/portal/, their own CSP without 'unsafe-inline', every asset from this origin, and the settings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import Settings
from swms.config import REPO_ROOT
from tests.unit.test_gateway_http import FakeRpc

STORAGE = "http://127.0.0.1:9000"


def client(**settings) -> TestClient:
    return TestClient(create_app(Settings.from_env(settings), rpc=FakeRpc()))


def test_portal_is_served_with_its_own_strict_policy():
    with client(GATEWAY_PORTAL_STORAGE_ORIGINS=STORAGE) as gateway:
        page = gateway.get("/portal/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert f"connect-src 'self' {STORAGE};" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
        script = gateway.get("/portal/js/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == csp
        assert gateway.get("/", follow_redirects=False).headers["location"] == "/portal/"
        assert gateway.get("/portal/nothing.js").status_code == 404


def test_every_portal_asset_comes_from_this_project():
    for path in (REPO_ROOT / "portal").rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://", text), f"{path}: an external address"
            assert not re.search(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", text), f"{path}: inline script or style"


def test_portal_can_be_switched_off_and_a_wrong_folder_stops_the_gateway(tmp_path: Path):
    with client(GATEWAY_PORTAL_DIR="") as gateway:
        assert gateway.get("/portal/").status_code == 404
    with pytest.raises(ValueError, match="GATEWAY_PORTAL_DIR"):
        create_app(Settings.from_env({"GATEWAY_PORTAL_DIR": str(tmp_path)}), rpc=FakeRpc())
    with pytest.raises(ValueError, match="GATEWAY_PORTAL_STORAGE_ORIGINS"):
        Settings.from_env({"GATEWAY_PORTAL_STORAGE_ORIGINS": "files.example.cn"})
