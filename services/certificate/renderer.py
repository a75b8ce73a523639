"""Rendering and signing in worker processes, so the Nameko hub never waits on WeasyPrint.

Why processes and not ``eventlet.tpool`` threads: a render is ~0.1 s of pure Python and C under
the GIL; in threads it still competes with the hub for the GIL, and two renders never use two
cores. Worker processes (started with exec, not fork: the parent runs eventlet) each take one
job at a time; the hub only waits, cooperatively, on their pipes.

``CERT_RENDER_PROCESSES`` sets how many (default: one per CPU core). A worker that dies or hangs
is replaced; the job fails with a retryable error and the issue is retried later.

The workers also download the photo and store the PDF (services/certificate/files.py), with one
S3 client each: the hub hands them links and keys, never the bytes (:meth:`RenderPool.held`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

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
    """``pdf`` is None when the worker stored it (then ``sha256`` is the stored copy's)."""
    __slots__ = ("pdf", "sha256", "render_s", "sign_s", "store_s")

    def __init__(self, pdf: bytes | None, sha256: str, render_s: float, sign_s: float, store_s: float = 0.0):
        self.pdf, self.sha256, self.render_s, self.sign_s, self.store_s = pdf, sha256, render_s, sign_s, store_s


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


# The S3 settings a worker needs for its own client (swms/storage.py reads these).
STORAGE_KEYS = ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "S3_ENCRYPTION", "S3_KMS_KEY_ID",
                "CERTIFICATE_S3_BUCKET", "max_workers")


class HeldWorker:
    """One worker, kept by one issue from the photo check to the stored PDF (see RenderPool.held)."""

    def __init__(self, pool: RenderPool):
        self.pool = pool
        self.worker: _Worker | None = None

    def _call(self, job: dict) -> dict:
        if self.worker is None:
            self.worker = self.pool._take()
        try:
            reply = self.pool._call(self.worker, job)
        except RenderError:
            self.worker = None   # replaced by the pool
            raise
        if not reply["ok"]:
            raise RenderError(reply["code"], reply["message"], reply.get("field"),
                              retryable=reply.get("retryable", True))
        return reply

    def check_photo(self, photo_url: str) -> str:
        """Download and check the photo in the worker (kept there for :meth:`issue`); its MIME type."""
        return self._call({"photo_url": photo_url})["photo_type"]

    def issue(self, face, photo_url: str | None, object_key: str | None, number: str,
              sign: bool = True, credential: tuple[str, bytes, str] | None = None) -> RenderResult:
        """Render and sign ``face`` with the photo behind ``photo_url``; stored under ``object_key``
        (first stored copy wins) and only its SHA-256 returned, or the PDF itself when the key is None.
        ``credential`` (key, body, media type) is stored after the PDF, by the worker too."""
        store = ({"key": object_key, "number": number, "credential": credential}
                 if object_key is not None else None)
        reply = self._call({"face": face, "sign": sign, "photo_url": photo_url, "store": store})
        return RenderResult(reply.get("pdf"), reply["sha256"], reply["render_s"], reply["sign_s"],
                            reply.get("store_s", 0.0))


class RenderPool:
    def __init__(self, size: int, keys: KeyRing, authority: str, compact_font: bool = True,
                 storage: dict | None = None, tsa_url: str = "", tsa_timeout: float = 10.0):
        self.size = size
        self.init = {"signing": (keys.signing.key_pem, keys.signing.cert_pem, keys.signing.chain_pem),
                     "authority": authority, "compact_font": compact_font, "storage": storage,
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

    def _take(self, wait_seconds: float = JOB_TIMEOUT_SECONDS) -> _Worker:
        worker = self._idle.get(timeout=wait_seconds) if not self._closed else None
        if worker is None:
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程已停止")
        return worker

    def _call(self, worker: _Worker, job: dict) -> dict:
        """One job on a taken worker; a worker that fails is replaced (RenderError, retryable)."""
        try:
            with eventlet.Timeout(JOB_TIMEOUT_SECONDS):
                return worker.call(job)
        except (eventlet.Timeout, EOFError, OSError, ValueError) as exc:
            log.error("render worker %s failed (%s); replacing it", worker.pid, type(exc).__name__)
            self._all.discard(worker)
            worker.close()
            if not self._closed:
                eventlet.spawn_n(self._add_worker)
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程异常，稍后自动重试") from None

    def _give_back(self, worker: _Worker) -> None:
        if worker in self._all:
            self._idle.put(worker)

    @contextlib.contextmanager
    def held(self) -> Iterator[HeldWorker]:
        """A worker taken at its first job and kept until the block ends: the photo it checked is
        the one it prints, without the bytes passing through the hub."""
        holder = HeldWorker(self)
        try:
            yield holder
        finally:
            if holder.worker is not None:
                self._give_back(holder.worker)

    def render(self, face, sign: bool = True) -> RenderResult:
        """Render (and sign) one certificate in a free worker and return the PDF."""
        with self.held() as worker:
            return worker.issue(face, None, None, face.certificate_number, sign=sign)

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
                               storage={key: config[key] for key in STORAGE_KEYS if key in config},
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
