"""Service specs: load, validate once, return frozen typed objects.

A spec is one JSON file per Consul service, validated against specs/schema.json
(JSON Schema 2020-12). Raw dicts never leave this module: callers get `Spec`
namedtuples whose nested parts are namedtuples or read-only mappings.

Validation (jsonschema, ~70 ms of CPU to import) runs only when a file changed:
the normalised document is cached (handlers.spec_cache), so the `medic-check` hot
path pays a stat and a marshal load. Durations: handlers.durations (finite, bounded).
Spec files must be regular files (a FIFO is refused, never read).
"""
import json
import os
import stat
import types
from collections import namedtuple

from . import spec_cache
from ..core.durations import parse_duration
from ..core.errors import SpecError

DEFAULT_SPECS_DIR = "/etc/consul-medic/specs"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "specs", "schema.json")

CHECK_DEFAULTS = {"interval": 10.0, "timeout": 5.0, "mode": "script",
                  "success_before_passing": 0, "failures_before_critical": 0}
HEAL_DEFAULTS = {"enabled": True, "grace": 30.0, "cooldown": 10.0, "backoff_base": 10.0,
                 "backoff_max": 300.0, "max_attempts": 5, "window": 600.0, "scale_down": False,
                 "replace_failing": False, "max_instances": None, "command_timeout": 120.0}
_DURATIONS = {"check": ("interval", "timeout"),
              "heal": ("grace", "cooldown", "backoff_base", "backoff_max", "window", "command_timeout")}

Scale = namedtuple("Scale", "driver project file service")
CheckPolicy = namedtuple("CheckPolicy", sorted(CHECK_DEFAULTS))
HealPolicy = namedtuple("HealPolicy", sorted(HEAL_DEFAULTS))
Spec = namedtuple("Spec", "service instances scale check heal notify env consul_addr path environments membership",
                  defaults=("owner",))
Spec.__doc__ = """One service's declared state, with the selected environment's overrides applied.

service: Consul service name; instances: how many must pass; scale: Scale;
check: CheckPolicy; heal: HealPolicy; notify: read-only mapping; env: selected
environment name or None; consul_addr: that environment's Consul address or None;
path: the spec file; environments: names of the environments the file defines;
membership: "owner" (only the compose owner's instances count, handlers/service/members.py) or "any"."""


def specs_dir(explicit=None, environ=None):
    env = os.environ if environ is None else environ
    return explicit or env.get("MEDIC_SPECS") or DEFAULT_SPECS_DIR


# -- validation (handlers.spec_schema: jsonschema, cold path) and normalisation ----
def validate_document(doc, path):
    """Raise SpecError naming file, JSON path and problem; return nothing."""
    from . import spec_schema
    spec_schema.validate(doc, path, SCHEMA_PATH)


def _normalise_part(part, path, where):
    out = dict(part)
    for section, keys in _DURATIONS.items():
        if section in out:
            sec = dict(out[section])
            for k in keys:
                if k in sec:
                    sec[k] = parse_duration(sec[k], "%s.%s.%s" % (where, section, k))
            out[section] = sec
    scale = out.get("scale")
    if scale and scale.get("driver") == "compose" and not os.path.isabs(scale["file"]):
        scale = dict(scale)
        scale["file"] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), scale["file"]))
        out["scale"] = scale
    return out


def normalise(doc, path):
    """Validated raw document -> plain normalised dict (durations in seconds, absolute paths)."""
    out = _normalise_part({k: v for k, v in doc.items() if k != "environments"}, path, "$")
    envs = {}
    for name, part in sorted((doc.get("environments") or {}).items()):
        envs[name] = _normalise_part(part, path, "$.environments." + name)
    out["environments"] = envs
    return out


def _semantic_checks(doc, path, env=None):
    heal = doc["heal"]
    where = "$.environments.%s" % env if env else "$"
    if heal["max_instances"] is not None and heal["max_instances"] < doc["instances"]:
        raise SpecError("%s: %s.heal.max_instances: %d is below instances (%d)"
                        % (path, where, heal["max_instances"], doc["instances"]))
    if heal["backoff_base"] > heal["backoff_max"]:
        raise SpecError("%s: %s.heal.backoff_base: larger than backoff_max" % (path, where))
    if doc["check"]["timeout"] <= 0:
        raise SpecError("%s: %s.check.timeout: must be > 0" % (path, where))


# -- loading --------------------------------------------------------------
def load_document(path, use_cache=True):
    """Read, validate and normalise one spec file -> plain dict (module-private use)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SpecError("%s: no such spec file" % path) from None
    except OSError as e:
        raise SpecError("%s: cannot read: %s" % (path, e.strerror)) from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the check until its deadline
        raise SpecError("%s: not a regular file" % path)
    real = os.path.realpath(path)
    cdir = spec_cache.cache_dir() if use_cache else None
    key = None
    if cdir:
        try:
            key = spec_cache.cache_key(st, os.stat(SCHEMA_PATH))
        except OSError:
            key = None
        if key:
            doc = spec_cache.get(cdir, real, key)
            if doc is not None:
                return doc
    doc = read_json(path)
    validate_document(doc, path)
    try:
        doc = normalise(doc, path)
    except ValueError as e:
        raise SpecError("%s: %s" % (path, e)) from None
    for env in [None] + sorted(doc["environments"]):
        _semantic_checks(_merged(doc, env), path, env)
    if key:
        spec_cache.put(cdir, real, key, doc)
    return doc


def read_json(path, limit=1024 * 1024, what="spec"):
    """A regular file of at most `limit` bytes -> JSON document (NaN, Infinity, 1e999 refused).

    Opened non-blocking and checked with fstat: a FIFO or device never blocks the reader."""
    from ..core.durations import finite_float, reject_constant
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError("%s: no such %s file" % (path, what)) from None
    except OSError as e:
        raise SpecError("%s: cannot read: %s" % (path, e.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError("%s: not a regular file" % path)
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise SpecError("%s: cannot read: %s" % (path, e.strerror)) from None
    if len(raw) > limit:
        raise SpecError("%s: larger than %d KiB" % (path, limit // 1024))
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject_constant, parse_float=finite_float)
    except UnicodeDecodeError:
        raise SpecError("%s: not UTF-8 text" % path) from None
    except RecursionError:
        raise SpecError("%s: $: nested too deeply" % path) from None
    except ValueError as e:
        raise SpecError("%s: $: not valid JSON: %s" % (path, e)) from None


def _merged(doc, env):
    base = {k: v for k, v in doc.items() if k != "environments"}
    over = doc["environments"].get(env, {}) if env else {}
    out = {"service": base["service"], "instances": over.get("instances", base["instances"]),
           "scale": over.get("scale", base["scale"]), "consul_addr": over.get("consul_addr")}
    for section, defaults in (("check", CHECK_DEFAULTS), ("heal", HEAL_DEFAULTS)):
        merged = dict(defaults)
        merged.update(base.get(section) or {})
        merged.update(over.get(section) or {})
        out[section] = merged
    notify = dict(base.get("notify") or {})
    notify.update(over.get("notify") or {})
    out["notify"] = notify
    return out


def _freeze(value):
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def build(doc, path, env=None):
    """Normalised document + environment -> frozen Spec."""
    m = _merged(doc, env)
    sc = m["scale"]
    scale = Scale(sc["driver"], sc.get("project"), sc.get("file"), sc["service"])
    return Spec(m["service"], m["instances"], scale,
                CheckPolicy(**m["check"]), HealPolicy(**m["heal"]), _freeze(m["notify"]),
                env, m["consul_addr"], path, tuple(sorted(doc["environments"])), doc.get("membership") or "owner")


def load_file(path, env=None, use_cache=True):
    return build(load_document(path, use_cache), path, env)


def spec_files(dirpath):
    try:
        names = sorted(os.listdir(dirpath))
    except FileNotFoundError:
        raise SpecError("%s: specs directory does not exist" % dirpath) from None
    except NotADirectoryError:
        raise SpecError("%s: specs path is not a directory" % dirpath) from None
    except OSError as e:
        raise SpecError("%s: cannot list specs: %s" % (dirpath, e.strerror)) from None
    return [os.path.join(dirpath, n) for n in names
            if n.endswith(".json") and not n.startswith(".") and n != "schema.json"]


def load_documents(dirpath, use_cache=True):
    """Every spec file of a directory -> [(path, document or SpecError)], in file-name order.

    One directory-level cache entry when every file is unchanged (a stat each, one read);
    otherwise file by file, a bad file failing only itself."""
    paths = spec_files(dirpath)
    cdir = spec_cache.cache_dir() if use_cache else None
    key = realdir = None
    if cdir and paths:
        try:
            realdir = os.path.realpath(dirpath)
            key = spec_cache.dir_key([(os.path.basename(p), os.stat(p)) for p in paths], os.stat(SCHEMA_PATH))
        except OSError:
            key = None
        docs = spec_cache.dir_get(cdir, realdir, key) if key else None
        if docs is not None and len(docs) == len(paths):
            return list(zip(paths, docs))
    out = []
    for path in paths:
        try:
            out.append((path, load_document(path, use_cache)))
        except SpecError as e:
            out.append((path, e))
    if key and not any(isinstance(d, SpecError) for _, d in out):
        spec_cache.dir_put(cdir, realdir, key, [d for _, d in out])
    return out


def load_dir(dirpath, env=None, use_cache=True):
    """Every spec in a directory -> {service: Spec}; a bad file or a duplicate service is an error."""
    specs, seen = {}, {}
    for path, doc in load_documents(dirpath, use_cache):
        if isinstance(doc, SpecError):
            raise doc
        spec = build(doc, path, env)
        key = spec.service.lower()  # Consul DNS is case-insensitive
        if key in seen:
            raise SpecError("%s: $.service: %r is already declared by %s" % (path, spec.service, seen[key]))
        seen[key] = path
        specs[spec.service] = spec
    return dict(sorted(specs.items()))


def find(dirpath, service, env=None, use_cache=True):
    """The spec for one service: `<dir>/<service>.json` if it declares it, else a scan."""
    direct = os.path.join(dirpath, service + ".json")
    if "/" not in service and os.path.exists(direct):
        spec = load_file(direct, env, use_cache)
        if spec.service == service:
            return spec
    for s in load_dir(dirpath, env, use_cache).values():
        if s.service == service:
            return s
    raise SpecError("%s: no spec declares service %r" % (dirpath, service))
