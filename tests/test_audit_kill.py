"""A real ``sklrp audit --n-jobs 2`` subprocess, interrupted (SIGINT) and killed (SIGKILL).

Ctrl-C: one line, exit 130, nothing left behind. SIGKILL of the audit: its worker processes die
with it (nothing keeps its stdout/stderr open), nothing is left in /dev/shm, and the next audit
removes the temporary folder the killed one could not.
"""

import os
import signal
import subprocess
import sys
import time

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from sklrp.kernels import intersection_kernel

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; worker clean-up "
                                "through prctl is Linux-only")


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    X, y = load_digits(return_X_y=True)
    joblib.dump(SVC(kernel=intersection_kernel).fit(X[::3], y[::3]), d / "hik.joblib")
    np.savez(d / "digits.npz", X=X, y=y, image_shape=np.array([8, 8]))
    return d


def _start_and_wait_for_workers(job, out, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "sklrp", "audit", str(job / "hik.joblib"), str(job / "digits.npz"),
                          "--n-jobs", "2", "--out", str(out), "-q"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        desc = _descendants(p.pid)
        if len(desc) >= 2 and any(d for d in os.listdir(out.parent) if d.startswith(".sklrp-audit-")):
            return p, desc
        if p.poll() is not None:
            break
        time.sleep(0.1)
    p.kill()
    pytest.fail(f"the audit's workers did not start (exit {p.poll()}): {p.communicate()[1].decode()[-500:]}")


def _gone(pids, timeout=15):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        alive = [q for q in pids if os.path.exists(f"/proc/{q}")]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def _shm_of(pids):
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return []
    return [n for n in names if any(f"-{q}-" in n or f"_{q}_" in n for q in pids)]


def test_sigint_one_line_exit_130_nothing_left(job, tmp_path):
    out = tmp_path / "rep"
    p, desc = _start_and_wait_for_workers(job, out)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err.decode() == "sklrp audit: interrupted; nothing was written\n"
    assert _gone(desc) == []
    assert os.listdir(tmp_path) == []  # no report, no temporary folder
    assert _shm_of([p.pid, *desc]) == []


def test_sigkill_leaves_no_orphans_and_the_next_run_cleans_up(job, tmp_path):
    out = tmp_path / "rep"
    p, desc = _start_and_wait_for_workers(job, out)
    os.kill(p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    p.communicate(timeout=30)  # returns only once no process holds the audit's stdout/stderr
    assert time.monotonic() - t0 < 15
    assert p.returncode == -signal.SIGKILL
    assert _gone(desc) == []
    assert _shm_of([p.pid, *desc]) == []
    stale = [d for d in os.listdir(tmp_path) if d.startswith(".sklrp-audit-")]
    assert stale and not out.exists()
    # the next audit writing next to it removes the dead run's folder
    from sklearn.linear_model import LinearRegression

    from sklrp.audit import audit

    X = np.random.RandomState(0).rand(30, 3)
    audit({"lin": LinearRegression().fit(X, X.sum(1))}, X, X.sum(1), out=str(tmp_path / "other"), aopc_samples=4)
    assert sorted(os.listdir(tmp_path)) == ["other"]
