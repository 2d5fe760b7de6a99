"""Tying a server process to the Python process that owns it.

A server must not outlive the Python process that owns it. On Linux the child asks the kernel for a
parent-death signal (``PR_SET_PDEATHSIG``): SIGKILL when its parent goes away. The kernel ties that
signal to the *thread* that forked the child, not to the process, so a server forked by a short-lived
thread would die with that thread. Every server is therefore forked by one spawner thread per process,
which lives as long as the process (a daemon thread, recreated in a forked child): the signal then fires
exactly when the owning process dies, SIGKILL included. (A ``redis-server`` binary cannot watch a pipe to
its owner itself, and a supervisor process would be one more process to lose.)

Each server also has a temporary directory ``rxstate-*`` (log, unix socket) holding an ``owner.pid``
file and an ``owner.lock`` file locked (``flock``) by the owner. A killed owner cannot remove it, so
every start removes the stale ones: those whose recorded pid is not alive and whose lock is free.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["OWNER_LOCK", "OWNER_PID", "SPAWNER", "pdeathsig_preexec", "pid_alive", "remove_stale_dirs"]

_PR_SET_PDEATHSIG = 1
OWNER_PID = "owner.pid"
OWNER_LOCK = "owner.lock"
_T = TypeVar("_T")


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the kernel SIGKILL the child when its parent thread dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """The process's one long-lived thread that forks servers (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._ready = threading.Condition(self._lock)
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # The thread does not exist in a forked child: start a new one there on first use.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._thread = None
        self._jobs = []

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                fn, future = self._jobs.pop(0)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, which re-raises it
                    future.set_exception(exc)

    def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the spawner thread and return its result (or raise its exception)."""
        future: Future[_T] = Future()
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rxstate-server-spawner", daemon=True)
                self._thread.start()
            self._jobs.append((fn, future))
            self._ready.notify()
        return future.result()


SPAWNER = _Spawner()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_dirs(parents: set[str]) -> list[str]:
    """Remove ``rxstate-*`` directories whose owner pid is not alive and whose owner lock is free.

    A directory without an ``owner.pid`` file (being created right now, or from an older version) is kept.

    Returns:
        The directories removed.
    """
    removed: list[str] = []
    for parent in parents:
        try:
            entries = list(Path(parent).glob("rxstate-*"))
        except OSError:
            continue
        for d in entries:
            try:
                pid = int((d / OWNER_PID).read_text().strip())
            except (OSError, ValueError):
                continue
            if pid == os.getpid() or pid_alive(pid):
                continue
            try:
                fd = os.open(d / OWNER_LOCK, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # locked: its owner still runs (in a pid namespace we cannot see)
                os.close(fd)
                continue
            try:
                shutil.rmtree(d, ignore_errors=True)
            finally:
                os.close(fd)
            if not d.exists():
                removed.append(str(d))
    return removed
