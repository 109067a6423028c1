"""gunicorn settings for `make serve` and production: sync workers, graceful shutdown, shared metrics.

HOST/PORT/WORKERS come from the environment. On SIGTERM each worker finishes
the requests it is handling (up to ``graceful_timeout``) before it exits, so no
answer is cut and no record is lost: records are written before the answer is sent.
"""

import gc
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


# The garbage collector (docs/performance.md, "Garbage collection"): a call allocates tens of
# thousands of short-lived objects, and every full collection also walked the CarePaths, the
# terminology and the compiled schemas loaded at start (a pause of tens of ms, in the p99). After
# the app is loaded each worker moves what it holds to the permanent generation (gc.freeze) and
# collects the young generation less often. GC_THRESHOLD="700,10,10" restores CPython's default.
GC_THRESHOLD = tuple(int(n) for n in os.environ.get("GC_THRESHOLD", "20000,20,20").split(","))


def post_worker_init(worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Freeze what the loaded app holds out of the collector's way, and set the collection thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """Drop the metrics of a worker that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
