"""The package's layering: no import cycles, every module importable alone, one execution seam."""

import ast
import pathlib
import re
import subprocess
import sys

import sklrp

ROOT = pathlib.Path(sklrp.__file__).parent


def _modules():
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _import_graph(mods):
    """Module -> the sklrp modules it imports (anywhere in its body, lazy imports included)."""
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("sklrp"):
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                deps.update(subs)
                if target in mods and len(subs) < len(node.names):
                    deps.add(target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        deps.discard(name)
        graph[name] = deps
    return graph


def _cycles(graph):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph(_modules())) == []


def test_every_module_imports_alone():
    # one interpreter, sklrp's modules forgotten between imports: each starts from nothing of sklrp
    names = sorted(n for n in _modules() if not n.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for key in [k for k in sys.modules if k == 'sklrp' or k.startswith('sklrp.')]:\n"
        "        del sys.modules[key]\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_explainer_internals_stay_in_the_seam():
    # evaluation, the audit and everything else use LRPTransformer.get_chain() and sklrp.chain
    pattern = re.compile(r"\._config\(\)|\bchain_\b|_target_array")
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{i}"
        for path in ROOT.rglob("*.py") if path.name not in ("explain.py", "chain.py")
        for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


def test_long_modules_say_why():
    # a module past ~700 lines states at its top why it is not split
    long = [p for p in ROOT.rglob("*.py") if len(p.read_text().splitlines()) > 700]
    unexplained = [str(p.relative_to(ROOT.parent)) for p in long
                   if "Why one module" not in p.read_text()[:4000]]
    assert unexplained == []
