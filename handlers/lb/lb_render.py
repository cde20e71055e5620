"""medic-lb's rendering: the "never an empty upstream" rule and Jinja2 templates. Pure.

    plan(view, last_good, env)         {service: [Instance]} + the last good servers -> Plan
    load_template(name_or_path)        a built-in template name (handlers/lb/templates/<name>.j2) or a file
    render(template, plan, vars)       Plan -> text

Never an empty upstream: a service with at least one passing instance is rendered with
exactly its passing instances. A service with none keeps the servers it had in the last
output that was written (`last_good`), and the plan says why (`kept`). A service with
none and no last good servers is left out of the output entirely (`omitted`): an upstream
block with no server is never written, whatever the template.
"""
import os
import re
from collections import namedtuple

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
BUILTIN = ("nginx-http", "nginx-stream", "haproxy")
LIVE_ENVS = (None, "", "default", "live", "prod", "production")

Plan = namedtuple("Plan", "services state kept omitted env")
# one service as a template sees it; `servers` is never empty
Service = namedtuple("Service", "name ident server_name servers instances passing kept")


class EmptyUpstream(AssertionError):
    """Raised if a plan would hold a service without servers: a bug, never an output."""


def ident(name):
    """A name safe for nginx upstream / HAProxy backend identifiers."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def server_name(name, env):
    """The virtual host: the service name, `<env>.<name>` outside live (e.g. test.www.example.com)."""
    return name if env in LIVE_ENVS else "%s.%s" % (env, name)


def server(inst):
    return {"id": inst.id, "address": inst.address, "port": inst.port, "tags": list(inst.tags),
            "role": inst.role, "node": inst.node, "priority": inst.priority}


def _with_backup(servers):
    """Mark servers below the service's best priority as backup (F5 priority groups)."""
    top = max(s["priority"] for s in servers)
    return [dict(s, backup=s["priority"] < top) for s in servers]


def plan(view, last_good=None, env=None):
    """Decide what each service's upstream holds. Returns Plan(services, state, kept, omitted, env).

    `state` is the new last-good record ({service: [server]}) to save after a successful write;
    `kept` and `omitted` are [(service, reason)] for the run's warning.
    """
    from ..core import trust
    last_good = {k: [trust.checked_server(s) for s in v if isinstance(s, dict) and trust.server_ok(s)]
                 for k, v in (last_good or {}).items() if isinstance(v, list)}
    services, state, kept, omitted = [], {}, [], []
    for name in sorted(view):
        insts = view[name]
        passing = [i for i in insts if i.passing and i.address and i.port]
        if passing:
            servers = [server(i) for i in passing]
            is_kept = False
        elif last_good.get(name):
            servers = [dict(s) for s in last_good[name]]
            is_kept = True
            failing = ", ".join("%s %s" % (i.id, i.status) for i in insts) or "no instance registered"
            kept.append((name, "%s has no passing instance (%s): kept its %d last good server(s)"
                         % (name, failing, len(servers))))
        else:
            omitted.append((name, "%s has no passing instance and no last good servers: left out"
                            % name))
            continue
        state[name] = [{k: v for k, v in s.items() if k != "backup"} for s in servers]
        services.append(Service(name, ident(name), server_name(name, env), _with_backup(servers),
                                [server(i) for i in insts], [server(i) for i in passing], is_kept))
    for s in services:
        if not s.servers:
            raise EmptyUpstream("service %s has no servers" % s.name)
    return Plan(services, state, kept, omitted, env)


def listen_at(value, offset=0):
    """A `listen` value plus `offset` on its port: 6379 -> '6380', '127.0.0.1:6379' -> '127.0.0.1:6380',
    '[::1]:6379' -> '[::1]:6380'. Anything else is a template error (a usage error, nothing written)."""
    import jinja2
    text = str(value).strip()
    host, colon, port = text.rpartition(":")
    if not port.isdigit() or (colon and (not host or (":" in host and not host.startswith("[")))):
        raise jinja2.TemplateRuntimeError("listen %r: PORT, IP:PORT or [IPv6]:PORT" % text)
    n = int(port) + int(offset)
    if not 0 < n < 65536:
        raise jinja2.TemplateRuntimeError("listen %r + %d: port out of range" % (text, int(offset)))
    return "%s%s%d" % (host, colon, n)


def _environment(loader):
    """autoescape is off (the output is not HTML); `finalize` (trust.finalize) refuses any printed
    value that is not a checked value, a number or plain text without control or special characters."""
    import jinja2

    from ..core import trust
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             finalize=trust.finalize)
    env.filters["listen_at"] = listen_at
    return env


def load_template(name_or_path):
    """A built-in name (nginx-http, nginx-stream, haproxy) or a path to a Jinja2 file."""
    import jinja2
    from ..core.errors import UsageError
    if name_or_path in BUILTIN:
        env = _environment(jinja2.FileSystemLoader(TEMPLATE_DIR))
        return env.get_template(name_or_path + ".j2")
    if os.sep not in name_or_path and not os.path.exists(name_or_path):
        raise UsageError("--template %r: not a built-in (%s) nor a file" % (name_or_path, ", ".join(BUILTIN)))
    try:
        with open(name_or_path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        raise UsageError("--template %s: %s" % (name_or_path, e.strerror)) from None
    d = os.path.dirname(os.path.abspath(name_or_path))
    try:
        return _environment(jinja2.FileSystemLoader(d)).from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise UsageError("--template %s line %s: %s" % (name_or_path, e.lineno, e.message)) from None


def render(template, p, variables=None):
    """Plan -> text. Raises UsageError when the template uses something that does not exist."""
    import jinja2

    from ..core import trust
    from ..core.errors import UsageError
    try:
        return template.render(services=p.services, env=p.env, vars=dict(variables or {}))
    except trust.TemplateRefused as e:
        raise UsageError("template: %s" % e) from None
    except jinja2.UndefinedError as e:
        raise UsageError("template: %s (pass it with --var KEY=VALUE?)" % e.message) from None
    except jinja2.TemplateError as e:
        raise UsageError("template: %s" % e) from None
