"""The house stays as docs/architecture.md draws it: one folder per capability over shared layers.

- A shared layer imports only the layers below it (and itself): core < consul, engine < spec <
  service, catalog < replace. consul and engine do not import each other; nor do service and
  catalog.
- A capability (one executable's concern: check, heal, ...) imports the shared layers and its own
  folder, never another capability: what two capabilities share moves down.
- Its executable is the folder's `__main__.py` (setup.cfg console_scripts) and nothing imports it.
- watches/ (pure payload parsing) imports nothing of handlers/ but core.errors.
- Only handlers/consul/ builds a Consul path or a Consul client; no module re-exports names.
- Only handlers/engine/ builds a Docker engine client (engine.connect): nothing else imports the
  docker SDK or the light engine transport.
Imports are read with `ast` (function-level imports count too).
"""
import ast
import configparser
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = "consul_medic"

SHARED = {"core": 0, "consul": 1, "engine": 1, "spec": 2, "service": 3, "catalog": 3, "replace": 4}
CAPABILITIES = {"check", "config", "heal", "register", "tag", "notify", "status", "lb", "failover",
                "rollout", "drain"}
# Consul clients: py-consul is built in consul/settings.make_client; nobody imports a raw HTTP client.
CONSUL_CLIENTS = {"consul": {"handlers.consul.settings"}, "http.client": set(), "urllib.request": set()}
# Docker engine clients: built in engine/engine.connect (the SDK's or the light one over engine_http).
ENGINE_CLIENTS = {"docker": {"handlers.engine.engine"}, "handlers.engine.engine_http": {"handlers.engine.engine"}}


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _modules():
    out = {}
    for top in ("handlers", "watches"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = sorted(x for x in dirs if not x.startswith(("__", ".")))
            for f in sorted(files):
                if f.endswith(".py"):
                    out[_module_name(os.path.join(d, f))] = os.path.join(d, f)
    return out


MODULES = _modules()


def _imports(name, path):
    """-> set of (imported name, line): modules of handlers/watches (without the consul_medic prefix)
    and third-party top names."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = (PKG + "." + name) if path.endswith("__init__.py") else (PKG + "." + name).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update((a.name.removeprefix(PKG + "."), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            mod = mod.removeprefix(PKG + ".")
            out.add((mod, node.lineno))
            for a in node.names:  # `from . import spec` names a module
                if mod + "." + a.name in MODULES:
                    out.add((mod + "." + a.name, node.lineno))
    return out


GRAPH = {name: {m for m, _ in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _area(mod):
    parts = mod.split(".")
    if parts[0] == "watches":
        return "watches"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and os.path.isdir(os.path.join(ROOT, *parts))) \
        else "handlers"


def _executables():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        script, _, target = line.partition("=")
        out[target.strip().partition(":")[0].removeprefix(PKG + ".")] = script.strip()
    return out


EXECUTABLES = _executables()


def test_every_folder_is_a_layer_or_a_capability():
    folders = {e.name for e in os.scandir(os.path.join(ROOT, "handlers"))
               if e.is_dir() and not e.name.startswith(("__", ".")) and e.name != "templates"}
    assert folders == set(SHARED) | CAPABILITIES, \
        "handlers/ folders %s: each is a shared layer (SHARED) or a capability (CAPABILITIES)" % sorted(folders)
    loose = [m for m in MODULES if m.startswith("handlers.") and _area(m) == "handlers"]
    assert not loose, "modules outside any folder: %s" % loose


def test_executables_are_the_capabilities_main_modules():
    mains = {"handlers.%s.__main__" % c for c in CAPABILITIES}
    assert set(EXECUTABLES) == mains, "console_scripts %s vs %s" % (sorted(EXECUTABLES), sorted(mains))
    assert all(s.startswith("medic-") for s in EXECUTABLES.values())
    importers = ["%s imports %s" % (m, d) for m, deps in GRAPH.items() for d in deps if d.endswith(".__main__")]
    assert not importers, "an executable is wiring only, nobody imports it: %s" % importers


def test_shared_layers_import_only_lower_layers():
    bad = []
    for mod, deps in GRAPH.items():
        a = _area(mod)
        if a not in SHARED:
            continue
        for dep in deps:
            b = _area(dep)
            if b in (a, "handlers", "watches"):
                continue
            if b not in SHARED or SHARED[b] >= SHARED[a]:
                bad.append("%s (%s) imports %s (%s)" % (mod, a, dep, b))
    assert not bad, "a shared layer imports only the layers below it:\n" + "\n".join(sorted(bad))


def test_capabilities_never_import_each_other():
    bad = ["%s imports %s: move what they share into a shared layer" % (m, d)
           for m, deps in GRAPH.items() if _area(m) in CAPABILITIES
           for d in deps if _area(d) in CAPABILITIES and _area(d) != _area(m)]
    assert not bad, "\n".join(sorted(bad))


def test_watches_import_nothing_of_handlers_but_errors():
    bad = ["%s imports %s" % (m, d) for m, deps in GRAPH.items() if m.startswith("watches")
           for d in deps if d.startswith("handlers") and d not in ("handlers", "handlers.core", "handlers.core.errors")]
    assert not bad, "watches/ is pure payload parsing: %s" % bad


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(GRAPH[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _importers(client, modules):
    return {m for m, p in modules.items() for name, _ in _imports(m, p)
            if name == client or name.startswith(client + ".")}


@pytest.mark.parametrize("client,allowed", sorted(CONSUL_CLIENTS.items()))
def test_only_the_access_layer_builds_consul_clients(client, allowed):
    users = _importers(client, MODULES)
    assert users <= allowed, "%s imported outside the Consul access layer: %s" % (client, sorted(users - allowed))


@pytest.mark.parametrize("client,allowed", sorted(ENGINE_CLIENTS.items()))
def test_only_the_engine_layer_builds_engine_clients(client, allowed):
    users = _importers(client, MODULES)
    assert users <= allowed, "%s imported outside handlers/engine/engine.py (use engine.connect): %s" % (
        client, sorted(users - allowed))


def _consul_paths(path):
    """String constants (not docstrings) that hold a Consul API path."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and "/v1/" in n.value]


def test_only_the_consul_layer_builds_consul_paths():
    bad = ["%s:%d %r" % (os.path.relpath(p, ROOT), line, text) for m, p in MODULES.items()
           if _area(m) != "consul" for line, text in _consul_paths(p)]
    assert not bad, "Consul paths are built in handlers/consul/api.py only:\n" + "\n".join(bad)


def test_no_re_export_lists():
    bad = []
    for m, p in MODULES.items():
        with open(p, encoding="utf-8") as f:
            bad += ["%s:%d" % (m, i) for i, line in enumerate(f, 1) if "noqa: F401" in line]
    assert not bad, "import a name from where it is defined; no re-exports: %s" % bad


def test_the_checkers_see_a_violation(tmp_path):
    """The parsers are not vacuous: relative imports resolve, a Consul path in code is found, a
    function-level import of the docker SDK or of the engine transport is found."""
    p = tmp_path / "x.py"
    p.write_text('"""doc /v1/kv/ here is fine."""\ndef f():\n    from ..heal import healer\n'
                 '    from ..spec.spec import load_dir\n    return "/v1/kv/" + "x"\n')
    names = {n for n, _ in _imports("handlers.lb.x", str(p))}
    assert {"handlers.heal.healer", "handlers.spec.spec"} <= names
    assert _consul_paths(str(p)) == [(5, "/v1/kv/")]
    q = tmp_path / "y.py"
    q.write_text("def f():\n    import docker.errors\n    from ..engine import engine_http\n    return docker\n")
    fake = {"handlers.register.y": str(q)}
    assert _importers("docker", fake) == {"handlers.register.y"}
    assert _importers("handlers.engine.engine_http", fake) == {"handlers.register.y"}
    assert "handlers.notify.notify_run" in GRAPH["handlers.notify.__main__"]
    assert "handlers.core.errors" in GRAPH["watches._common"] or "handlers.core.errors" in GRAPH["watches.checks"]
