"""Rendering and signing in worker processes, so the Nameko hub never waits on WeasyPrint.

Why processes and not ``eventlet.tpool`` threads: a render is ~0.1 s of pure Python and C under
the GIL; in threads it still competes with the hub for the GIL, and two renders never use two
cores. Worker processes (started with exec, not fork: the parent runs eventlet) each take one
job at a time; the hub only waits, cooperatively, on their pipes.

``CERT_RENDER_PROCESSES`` sets how many (default: one per CPU core). A worker that dies or hangs
is replaced; the job fails with a retryable error and the issue is retried later.
"""
from __future__ import annotations

import logging
import os
import sys

import eventlet
from eventlet.green import subprocess
from eventlet.queue import LightQueue
from nameko.extensions import DependencyProvider

from services.certificate import render_worker
from services.certificate.keys import KeyRing, load_keys
from services.certificate.settings import NUMBERS
from swms.config import REPO_ROOT

log = logging.getLogger(__name__)

JOB_TIMEOUT_SECONDS = 120.0


class RenderError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None, retryable: bool = True):
        super().__init__(code, message, field)
        self.code, self.message, self.field, self.retryable = code, message, field, retryable


class RenderResult:
    __slots__ = ("pdf", "render_s", "sign_s")

    def __init__(self, pdf: bytes, render_s: float, sign_s: float):
        self.pdf, self.render_s, self.sign_s = pdf, render_s, sign_s


class _Worker:
    def __init__(self, init: dict):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.certificate.render_worker"], cwd=str(REPO_ROOT), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        render_worker.write_frame(self.process.stdin, init)
        reply = render_worker.read_frame(self.process.stdout)
        if not reply or not reply.get("ok"):
            self.close()
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程无法启动")
        self.pid = reply["pid"]

    def call(self, job: dict) -> dict:
        render_worker.write_frame(self.process.stdin, job)
        reply = render_worker.read_frame(self.process.stdout)
        if reply is None:
            raise EOFError("render worker exited")
        return reply

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait()
        except Exception:
            pass


class RenderPool:
    def __init__(self, size: int, keys: KeyRing, authority: str, compact_font: bool = True,
                 tsa_url: str = "", tsa_timeout: float = 10.0):
        self.size = size
        self.init = {"signing": (keys.signing.key_pem, keys.signing.cert_pem, keys.signing.chain_pem),
                     "authority": authority, "compact_font": compact_font,
                     "tsa_url": tsa_url, "tsa_timeout": tsa_timeout}
        self._idle: LightQueue = LightQueue()
        self._all: set[_Worker] = set()
        self._closed = False

    def start(self) -> None:
        for _ in range(self.size):
            eventlet.spawn_n(self._add_worker)

    def _add_worker(self) -> None:
        while not self._closed:
            try:
                worker = _Worker(self.init)
            except Exception:
                log.exception("render worker failed to start; retrying in 5 s")
                eventlet.sleep(5)
                continue
            if self._closed:
                worker.close()
                return
            self._all.add(worker)
            self._idle.put(worker)
            return

    def render(self, face, sign: bool = True, wait_seconds: float = JOB_TIMEOUT_SECONDS) -> RenderResult:
        """Render (and sign) one certificate in a free worker; waits cooperatively for one."""
        worker = self._idle.get(timeout=wait_seconds) if not self._closed else None
        if worker is None:
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程已停止")
        healthy = False
        try:
            with eventlet.Timeout(JOB_TIMEOUT_SECONDS):
                reply = worker.call({"face": face, "sign": sign})
            healthy = True
        except (eventlet.Timeout, EOFError, OSError, ValueError) as exc:
            log.error("render worker %s failed (%s); replacing it", worker.pid, type(exc).__name__)
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程异常，稍后自动重试") from None
        finally:
            if healthy:
                self._idle.put(worker)
            else:
                self._all.discard(worker)
                worker.close()
                if not self._closed:
                    eventlet.spawn_n(self._add_worker)
        if not reply["ok"]:
            raise RenderError(reply["code"], reply["message"], reply.get("field"),
                              retryable=reply.get("retryable", True))
        return RenderResult(reply["pdf"], reply["render_s"], reply["sign_s"])

    def close(self) -> None:
        self._closed = True
        for worker in list(self._all):
            worker.close()
        self._all.clear()


def pool_size(config: dict) -> int:
    configured = NUMBERS.get(config, "CERT_RENDER_PROCESSES")
    return configured if configured > 0 else (os.cpu_count() or 1)


class RenderWorkers(DependencyProvider):
    """The container's pool of render-and-sign processes (started with the container)."""

    def setup(self):
        config = self.container.config
        self.keys = load_keys(config)
        self.pool = RenderPool(pool_size(config), self.keys, str(config.get("CERT_AUTHORITY_NAME") or ""),
                               tsa_url=str(config.get("CERT_TSA_URL") or "").strip(),
                               tsa_timeout=float(NUMBERS.get(config, "CERT_TSA_TIMEOUT_SECONDS")))

    def start(self):
        self.pool.start()

    def stop(self):
        self.pool.close()

    def kill(self):
        self.pool.close()

    def get_dependency(self, worker_ctx):
        return self.pool
