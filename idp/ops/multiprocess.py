"""The directory in which gunicorn's workers share their metric values (prometheus_client multiprocess mode).

The master prepares it before any worker starts, so every worker imports prometheus_client with
``PROMETHEUS_MULTIPROC_DIR`` already set; a dead worker's live gauges are dropped; a directory
the master made itself is removed when it exits. Deliberately free of prometheus_client
imports until a worker has died, so that loading the gunicorn configuration imports none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["ENV", "prepare_directory", "remove_directory", "worker_exited"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWNED = "MYNA_METRICS_DIR_OWNED"
"""Set when the directory is a temporary one made here, so that the master removes it at exit."""


def prepare_directory(environ: MutableMapping[str, str] | None = None) -> Path:
    """Make (or empty) the metrics directory named by ``PROMETHEUS_MULTIPROC_DIR``, or a new temporary one.

    Values left by an earlier run would otherwise add up with this run's.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV):
        directory = Path(env[ENV])
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="myna-metrics-"))
        env[ENV] = str(directory)
        env[_OWNED] = "1"
    return directory


def worker_exited(pid: int) -> None:
    """Drop the live-gauge files of a worker that has exited (gunicorn's ``child_exit``)."""
    if not os.environ.get(ENV):
        return
    from prometheus_client import multiprocess  # noqa: PLC0415 - only once workers exist

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call] # unannotated upstream


def remove_directory(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove the directory at exit if ``prepare_directory`` made it (gunicorn's ``on_exit``)."""
    env = os.environ if environ is None else environ
    if env.get(_OWNED) and env.get(ENV):
        shutil.rmtree(env[ENV], ignore_errors=True)
        del env[ENV], env[_OWNED]  # nothing started later in this process may look for it
