"""Where the audit writes, and how its worker processes end with it.

* The report is built in a hidden temporary folder next to ``--out``
  (``.sklrp-audit-<pid>-<random>``, with an ``owner`` file naming the process) and renamed into
  place at the end, so a failed or interrupted run leaves nothing half-written. A run that is
  killed (SIGKILL) cannot clean up; the next audit writing to the same parent folder removes
  temporary folders whose owning process no longer exists.
* joblib workers (loky processes) ask the kernel to kill them when the audit process dies
  (``prctl(PR_SET_PDEATHSIG)`` on Linux), so a killed audit leaves no orphans holding its stdout
  and stderr; arrays are sent to them by pickling, not through memory-mapped files in
  ``/dev/shm`` (``max_nbytes=None``).
* The published report is readable by others: folders 0755, files 0644.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

from .errors import AuditError

__all__ = ["check_out", "Workspace", "remove_stale", "parallel"]

PREFIX = ".sklrp-audit-"
_PR_SET_PDEATHSIG = 1


def check_out(out):
    """``out`` as an absolute path; refuse what cannot become a report folder.

    Raises :class:`AuditError` when ``out`` is a file, a non-empty folder that is not an sklrp
    report, or when its parent folder does not exist or is not writable.
    """
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise AuditError(f"--out {out} exists and is not a directory")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, "summary.json")):
            raise AuditError(f"--out {out} exists and is not an sklrp report; choose another directory")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise AuditError(f"parent directory of --out does not exist: {parent}")
    try:  # the only reliable test (root, read-only file systems): create and remove a folder
        os.rmdir(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise AuditError(f"cannot write to the parent directory of --out: {parent} ({exc.strerror})") from None
    return out


def _start_time(pid):
    """Kernel start time of a process (to tell a live owner from a reused PID), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    if start is not None and os.path.isdir("/proc"):
        return _start_time(pid) == start
    return True


def remove_stale(parent):
    """Remove temporary audit folders in ``parent`` whose owning process has ended; returns them."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not name.startswith(PREFIX) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, "owner"), encoding="ascii") as fh:
                pid_s, _, start = fh.read().strip().partition(" ")
            pid = int(pid_s)
        except (OSError, ValueError):
            # no owner file: a folder from an older sklrp; the pid is in its name
            try:
                pid, start = int(name[len(PREFIX):].split("-")[0]), None
            except ValueError:
                continue
        if pid != os.getpid() and not _alive(pid, start or None):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class Workspace:
    """A temporary report folder next to ``out``; :meth:`publish` moves it into place.

    Use as a context manager: leaving the block without :meth:`publish` (an error, Ctrl-C)
    removes the folder.
    """

    def __init__(self, out):
        self.out = check_out(out)
        self.parent = os.path.dirname(self.out)
        self.path = None

    def __enter__(self):
        remove_stale(self.parent)
        try:
            self.path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.parent)
            with open(os.path.join(self.path, "owner"), "w", encoding="ascii") as fh:
                fh.write(f"{os.getpid()} {_start_time(os.getpid()) or ''}\n")
        except OSError as exc:
            raise AuditError(f"cannot write to {self.parent}: {exc.strerror}") from None
        return self

    def file(self, name):
        return os.path.join(self.path, name)

    def publish(self):
        """Make the folder readable (0755 / 0644) and rename it to ``out`` (replacing an old report)."""
        os.remove(os.path.join(self.path, "owner"))
        os.chmod(self.path, 0o755)
        for name in os.listdir(self.path):
            os.chmod(os.path.join(self.path, name), 0o644)
        old = None
        if os.path.exists(self.out):
            old = f"{self.path}-old"
            os.rename(self.out, old)
        os.rename(self.path, self.out)
        self.path = None
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def __exit__(self, *exc):
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        return False


def _worker_init():
    """Runs first in every loky worker: die with the process that started the workers."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            return
        if os.getppid() == 1:  # the parent died before we got here
            os._exit(1)


def parallel(tasks, *, n_jobs=None, verbose=False, desc=None, total=None):
    """Run joblib ``delayed`` tasks; results in order, with a tqdm bar when ``verbose``.

    With the default (loky) backend the workers die with the audit process and no arrays go
    through ``/dev/shm``; any other backend set with ``joblib.parallel_config`` (threads, Dask)
    is used as configured.
    """
    from joblib import Parallel, parallel_config
    from joblib.parallel import get_active_backend

    backend, configured = get_active_backend()
    effective = configured if n_jobs is None else n_jobs
    if type(backend).__name__ == "LokyBackend" and effective not in (None, 1):
        with parallel_config(backend="loky", initializer=_worker_init):
            results = Parallel(n_jobs=effective, max_nbytes=None, return_as="generator")(tasks)
            return _drain(results, verbose, desc, total)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    return _drain(results, verbose, desc, total)


def _drain(results, verbose, desc, total):
    if verbose:
        from tqdm.auto import tqdm

        results = tqdm(results, total=total, desc=desc, leave=False)
    return list(results)
