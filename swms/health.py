"""The ``health`` RPC every service answers: database and (where used) object storage reachable,
and (given the process's ops endpoint) every queue consumer consuming, event queues included."""
from __future__ import annotations

from sqlalchemy import text

from swms.contracts.common import HealthResponse


def check(service_name: str, db, bucket=None, process=None) -> HealthResponse:
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: the caller wants the whole picture
        checks["database"] = f"error: {type(exc).__name__}"
    if bucket is not None:
        try:
            bucket.client.head_bucket(Bucket=bucket.name)
            checks["object_storage"] = "ok"
        except Exception as exc:
            checks["object_storage"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok"  # this reply travelled over it
    if process is not None:
        # The RPC consumer answered; the event consumer may still be declaring its queues.
        starting = process.consumers_not_yet_consuming()
        checks["consumers"] = f"starting: {', '.join(starting)}" if starting else "ok"
    status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    return HealthResponse(service=service_name, status=status, checks=checks)
