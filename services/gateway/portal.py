"""The web portal (网上办理, docs/portal.md): static files (HTML, CSS, ES modules; no build step)
served same-origin at ``/portal/`` so that its pages call ``/api/v1`` without CORS and every
asset comes from this project (no CDN).

Its own ``Content-Security-Policy``: scripts, styles, fonts and images only from this origin, no
inline script or style; ``connect-src`` and ``img-src`` also allow the object storage origins
(``GATEWAY_PORTAL_STORAGE_ORIGINS``) because the browser posts files straight to storage with
the presigned forms the API hands out and shows photos from short-lived storage links.
``Cache-Control: no-cache``: a deployment's new files are picked up at once (revalidated by ETag).
"""
from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from services.gateway.config import Settings
from swms.config import REPO_ROOT

MOUNT = "/portal"


def portal_directory(settings: Settings) -> Path | None:
    if not settings.portal_dir:
        return None
    path = Path(settings.portal_dir)
    path = path if path.is_absolute() else REPO_ROOT / path
    if not (path / "index.html").is_file():
        raise ValueError(f"GATEWAY_PORTAL_DIR: {path} has no index.html")
    return path


def content_security_policy(settings: Settings) -> bytes:
    storage = "".join(" " + origin for origin in settings.portal_storage_origins)
    return ("default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; "
            f"img-src 'self' blob: data:{storage}; connect-src 'self'{storage}; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'").encode()


class PortalFiles:
    """StaticFiles with the portal's headers."""

    def __init__(self, directory: Path, settings: Settings):
        self.files = StaticFiles(directory=directory, html=True)
        self.headers = [(b"content-security-policy", content_security_policy(settings)),
                        (b"cache-control", b"no-cache")]

    async def __call__(self, scope, receive, send):
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.files(scope, receive, with_headers)


def install(app, settings: Settings) -> None:
    directory = portal_directory(settings)
    if directory is None:
        return
    app.mount(MOUNT, PortalFiles(directory, settings), name="portal")

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse(MOUNT + "/", status_code=302)

    @app.get(MOUNT, include_in_schema=False)
    async def portal_root():
        return RedirectResponse(MOUNT + "/", status_code=302)
