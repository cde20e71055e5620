"""The house stays as docs/architecture.md draws it: layers import downwards only, no cycles,
executables are wiring only and never import each other, modules stay under ~300 lines.

The layer of every module of handlers/ and watches/ is in LAYERS below: the ONE table (the doc
explains the layers and points here). A new module must be added to it, in the lowest layer
whose modules it needs. Imports are read with `ast` (function-level imports count too).
"""
import ast
import configparser
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 300

# 0 base      stdlib only (and handlers.errors): exit states, errors, KV key layout, durations, payload parsers
# 1 access    the ways out: Consul (settings builds every connection; lighthttp, kv, lock, consul_errors,
#             health), the engine (scaler), the audit log, the notify hand-off (alerts), options, the wrapper
# 2 domain    what things mean, mostly pure: specs, heal's decide/observe/history, notify rules/messages/state
# 3 services  one run's orchestration over the parts: heal triage, batch checks, the registrar loop, notify
# 4 executables (setup.cfg console_scripts; asserted below): options -> build the parts -> one call
LAYERS = {
    0: ["handlers", "handlers.errors", "handlers.status", "handlers.keys", "handlers.durations",
        "watches", "watches._common", "watches.checks", "watches.service", "watches.detect", "watches.keyprefix"],
    1: ["handlers.settings", "handlers.lighthttp", "handlers.consul_light", "handlers.kv", "handlers.lock", "handlers.consul_errors",
        "handlers.health", "handlers.scaler", "handlers.audit", "handlers.alerts", "handlers.options",
        "handlers.runtime", "handlers.pause", "handlers.recheck", "handlers.heal_storm",
        "handlers.acl", "handlers.compose_file", "handlers.engine", "handlers.engine_http",
        "handlers.rollout_image", "handlers.rollout_lock", "handlers.rollout_progress", "handlers.rollout_ahead",
        "handlers.drain_state"],  # rollout helper
    2: ["handlers.heal_seen", "handlers.spec", "handlers.spec_schema", "handlers.spec_cache", "handlers.heal_model", "handlers.heal_counts", "handlers.decide", "handlers.observe", "handlers.history",
        "handlers.notify_rules", "handlers.notify_message", "handlers.notify_state", "handlers.notify_config",
        "handlers.notify_core",
        # registration: conventions (model, checks, labels, roles), the pure diff, the agent client
        "handlers.reg_model", "handlers.reg_checks", "handlers.reg_labels", "handlers.reg_roles",
        "handlers.reg_diff", "handlers.reg_agent", "handlers.reg_probe", "handlers.reg_wake",
        # traffic: the load balancer's view, rendering and applying; failover's pure decision and its I/O
        "handlers.lb_view", "handlers.lb_render", "handlers.lb_apply", "handlers.lb_options",
        "handlers.failover_decide", "handlers.failover_io",
        # counting passing instances against a spec (check, batch, status), the node dump of a batch pass
        "handlers.count", "handlers.nodedump",
        # rollout/drain: pure plans, the rollout state, the compose driver (rollout helper)
        "handlers.rollout_plan", "handlers.rollout_state", "handlers.rollout_io", "handlers.drain_plan"],
    3: ["handlers.batch", "handlers.triage", "handlers.heal_select", "handlers.healer", "handlers.healing",
        "handlers.heal_context", "handlers.heal_changes", "handlers.heal_timer",
        "handlers.heal_admin", "handlers.retag", "handlers.lb_core", "handlers.failover_core", "handlers.reg_registrar", "handlers.reg_loop", "handlers.channels", "handlers.notifier",
        "handlers.notify_run",
        "handlers.rollout_exec", "handlers.rollout_swarm", "handlers.rollout_run", "handlers.drain_exec", "handlers.drain_run"],
    4: ["handlers.check", "handlers.config", "handlers.heal", "handlers.register", "handlers.tag",
        "handlers.notify", "handlers.status_cmd", "handlers.lb", "handlers.failover",
        "handlers.rollout", "handlers.drain"],
}

# Known exceptions, each with its owner and why. The test fails when an entry is no longer needed,
# so the list only shrinks: remove the line when the owner's fix lands.
ALLOWED_IMPORTS = {
}
OVERSIZE = {
    # module: why it may still exceed MAX_LINES on this branch (remove when split)
}
# Only the access layer speaks to Consul: py-consul is built in settings.make_client, the light
# transport is lighthttp. Nobody else imports a Consul or raw HTTP client.
CONSUL_CLIENTS = {"consul": {"handlers.settings"}, "http.client": set(), "urllib.request": set()}


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _modules():
    out = {}
    for pkg in ("handlers", "watches"):
        for f in sorted(os.listdir(os.path.join(ROOT, pkg))):
            if f.endswith(".py"):
                path = os.path.join(ROOT, pkg, f)
                out[_module_name(path)] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """-> set of (imported name, line): modules of handlers/watches and third-party top names."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add((mod, node.lineno))
            for a in node.names:  # `from . import spec` names a module
                if mod + "." + a.name in MODULES:
                    out.add((mod + "." + a.name, node.lineno))
    return out


GRAPH = {name: {m for m, _ in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _layer_of():
    where = {}
    for layer, names in LAYERS.items():
        for n in names:
            assert n not in where, "module %s is listed twice in LAYERS (tests/test_architecture.py)" % n
            where[n] = layer
    return where


LAYER_OF = _layer_of()


def _executables():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        script, _, target = line.partition("=")
        out[target.strip().partition(":")[0]] = script.strip()
    return out


EXECUTABLES = _executables()


def test_every_module_has_a_layer():
    missing = sorted(set(MODULES) - set(LAYER_OF))
    assert not missing, "\n".join("module %s has no layer: add it to LAYERS in tests/test_architecture.py "
                                  "(see docs/architecture.md)" % m for m in missing)
    gone = sorted(set(LAYER_OF) - set(MODULES))
    assert not gone, "LAYERS lists modules that do not exist: %s" % gone


def test_executables_are_exactly_layer_4():
    assert set(EXECUTABLES) == set(LAYERS[4]), \
        "setup.cfg console_scripts %s vs LAYERS[4] %s: an executable's module is layer 4, " \
        "and layer 4 holds executables only" % (sorted(EXECUTABLES), sorted(LAYERS[4]))
    assert all(s.startswith("medic-") for s in EXECUTABLES.values())


def test_imports_go_downwards_only():
    bad = []
    for mod, deps in GRAPH.items():
        for dep in deps:
            if (mod, dep) in ALLOWED_IMPORTS or mod not in LAYER_OF or dep not in LAYER_OF:
                continue
            if LAYER_OF[dep] > LAYER_OF[mod]:
                bad.append("%s (layer %d) imports %s (layer %d)" % (mod, LAYER_OF[mod], dep, LAYER_OF[dep]))
            elif LAYER_OF[dep] == 4:
                bad.append("executable %s imports executable %s (%s): move what they share below"
                           % (mod, dep, EXECUTABLES.get(dep)))
    assert not bad, "forbidden import direction:\n" + "\n".join(sorted(bad))


def test_watches_import_nothing_of_handlers_but_errors():
    bad = ["%s imports %s" % (m, d) for m, deps in GRAPH.items() if m.startswith("watches")
           for d in deps if d.startswith("handlers") and d not in ("handlers", "handlers.errors")]
    assert not bad, "watches/ is pure payload parsing: %s" % bad


def test_no_import_cycles():
    graph = {m: {d for d in deps if (m, d) not in ALLOWED_IMPORTS} for m, deps in GRAPH.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_allowlists_only_shrink():
    stale = ["%s -> %s" % edge for edge in ALLOWED_IMPORTS if edge[1] not in GRAPH.get(edge[0], ())]
    assert not stale, "ALLOWED_IMPORTS entries no longer needed (remove them): %s" % stale
    fit = [m for m in OVERSIZE if m not in MODULES or _lines(MODULES[m]) <= MAX_LINES]
    assert not fit, "OVERSIZE entries now within %d lines or gone (remove them): %s" % (MAX_LINES, fit)


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_modules_stay_small():
    big = ["%s: %d lines" % (m, _lines(p)) for m, p in MODULES.items()
           if m not in OVERSIZE and _lines(p) > MAX_LINES]
    assert not big, "one concept per module, under ~%d lines; split these (or, with a reason, list them in " \
                    "OVERSIZE): %s" % (MAX_LINES, big)


@pytest.mark.parametrize("client,allowed", sorted(CONSUL_CLIENTS.items()))
def test_only_the_access_layer_builds_consul_clients(client, allowed):
    users = {m for m, p in MODULES.items() for name, _ in _imports(m, p)
             if name == client or name.startswith(client + ".")}
    assert users <= allowed, "%s imported outside the Consul access layer: %s" % (client, sorted(users - allowed))


def test_the_checker_sees_a_violation(tmp_path):
    """The parser is not vacuous: a relative import of a module is resolved to it."""
    p = tmp_path / "handlers" / "x.py"
    p.parent.mkdir()
    p.write_text("def f():\n    from . import heal\n    from .spec import load_dir\n")
    names = {n for n, _ in _imports("handlers.x", str(p))}
    assert {"handlers.heal", "handlers.spec"} <= names
    assert "handlers.notify_run" in GRAPH["handlers.notify"] and "handlers.errors" in GRAPH["watches"]
