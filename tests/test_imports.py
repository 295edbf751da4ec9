"""Every public submodule is reachable after a bare ``import sklrp``, whatever was imported before.

Each name is checked in its own fresh process, so that an import made for one name cannot make
another reachable. The processes are forked from one interpreter that has imported sklrp's
third-party dependencies (by importing every submodule once and then dropping all ``sklrp``
modules from ``sys.modules``): the check stays fast, and sklrp itself starts from nothing in
every child.
"""

import json
import os
import pkgutil
import subprocess
import sys

import pytest

import sklrp

# public submodule -> one public attribute the documentation uses
SUBMODULES = {
    "audit": "shortcut_scan",
    "bow": "DenseSIFT",
    "chain": "Chain",
    "cli": "main",
    "dask": "explain",
    "datasets": "make_clever_hans",
    "evaluation": "aopc_score",
    "explain": "LRPTransformer",
    "explanation": "Explanation",
    "kernels": "intersection_kernel",
    "linear": "elementwise",
    "nn": "THESIS_COMPOSITE",
    "plotting": "heatmap",
    "propagators": "Propagator",
    "rules": "Epsilon",
    "spray": "SpRAy",
    "svm": "Pair",
    "tabular": "ColumnTransformerPropagator",
}

# loaded on first use: ``import sklrp`` alone must not import them (it stays fast)
LAZY = ("audit", "bow", "cli", "kernels", "linear", "nn", "plotting", "svm", "tabular")

_PROBE = r"""
import importlib, json, os, sys

checks, lazy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# load the third-party dependencies once, then forget sklrp: each child imports it from nothing
for name in checks:
    importlib.import_module("sklrp." + name)
for name in [m for m in sys.modules if m == "sklrp" or m.startswith("sklrp.")]:
    del sys.modules[name]
results = {}


def child(name, attr):
    import sklrp
    if name is None:
        loaded = [m for m in lazy if "sklrp." + m in sys.modules]
        if loaded:
            raise AssertionError("import sklrp loaded " + ", ".join(loaded))
        return
    getattr(getattr(sklrp, name), attr)
    if name not in dir(sklrp):
        raise AssertionError(name + " missing from dir(sklrp)")


for name, attr in [(None, None)] + sorted(checks.items()):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(name, attr)
            msg = ""
        except BaseException as exc:
            msg = type(exc).__name__ + ": " + str(exc)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    results[str(name)] = out.decode() if status == 0 else f"child exited with status {status}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def fresh_imports():
    if not hasattr(os, "fork"):
        pytest.fail("this check forks fresh interpreters (POSIX)")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    root = os.path.dirname(os.path.dirname(os.path.abspath(sklrp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(SUBMODULES), json.dumps(LAZY)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(SUBMODULES))
def test_submodule_reachable_after_bare_import(fresh_imports, name):
    assert fresh_imports[name] == "", f"import sklrp; sklrp.{name}.{SUBMODULES[name]}: {fresh_imports[name]}"


def test_bare_import_leaves_lazy_submodules_unloaded(fresh_imports):
    assert fresh_imports["None"] == ""


def test_every_public_module_is_listed():
    on_disk = {m.name for m in pkgutil.iter_modules(sklrp.__path__) if not m.name.startswith("_")}
    missing = on_disk - set(SUBMODULES)
    assert not missing, (
        f"public submodules {sorted(missing)}: import them in sklrp/__init__.py or add them to its "
        "_LAZY_SUBMODULES, and list them here"
    )


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        sklrp.not_a_module
    assert not hasattr(sklrp, "not_a_module")
