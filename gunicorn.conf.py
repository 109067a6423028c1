"""gunicorn settings for `make serve` and production: sync workers, graceful shutdown, shared metrics.

HOST/PORT/WORKERS come from the environment. On SIGTERM each worker finishes
the requests it is handling (up to ``graceful_timeout``) before it exits, so no
answer is cut and no record is lost: records are written before the answer is sent.
"""

import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WORKERS", "3"))
# sync workers block on a slow client: run a buffering proxy in front (docs/security.md), or
# WORKER_CLASS=gthread so a half-open connection holds one thread, not a whole worker.
worker_class = os.environ.get("WORKER_CLASS", "sync")
threads = int(os.environ.get("THREADS", "8" if worker_class == "gthread" else "1"))
limit_request_line = 8190  # documented limits (docs/security.md): a 1 MB token never reaches the app
limit_request_fields = 100
limit_request_field_size = 8190
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
accesslog = None  # the app logs one structured JSON line per request itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Prometheus metrics from all workers (prometheus_client multiprocess mode).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cds-metrics-")


def on_starting(server):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Start with an empty metrics directory."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Drop the metrics of a worker that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
