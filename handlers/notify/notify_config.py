"""medic-notify's configuration: the global notify file and the policy a service gets.

    --notify-config > MEDIC_NOTIFY_CONFIG > /etc/consul-medic/notify.json
    (a missing file means the log channel only)

The file is validated against `$defs/notify` of specs/schema.json; the policy of a
service is the file merged with its spec's `notify` (notify_rules.policy).
"""
import json
import os

from . import notify_rules
from ..spec import spec as spec_mod
from ..core.errors import SpecError

DEFAULT_NOTIFY_CONFIG = "/etc/consul-medic/notify.json"


def config_path(explicit=None, environ=None):
    env = os.environ if environ is None else environ
    return explicit or env.get("MEDIC_NOTIFY_CONFIG") or DEFAULT_NOTIFY_CONFIG


def load_config(path):
    """The global notify file -> dict; a missing file is {} (log channel only).

    Read like a spec: a regular file of at most 1 MiB, NaN/Infinity refused."""
    if not os.path.lexists(path):
        return {}
    doc = spec_mod.read_json(path, what="notify config")
    validate_config(doc, path)
    return doc


def validate_config(doc, path):
    import jsonschema

    with open(spec_mod.SCHEMA_PATH, encoding="utf-8") as f:
        full = json.load(f)
    schema = {"$schema": full["$schema"], "$defs": full["$defs"], "$ref": "#/$defs/notify"}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        where = "$" + "".join("[%d]" % p if isinstance(p, int) else "." + str(p) for p in best.absolute_path)
        raise SpecError("%s: %s: %s" % (path, where, best.message[:200]))


def resolve_policy(global_conf, spec, where):
    try:
        return notify_rules.policy(global_conf, spec.notify if spec is not None else None)
    except ValueError as e:
        raise SpecError("%s: %s" % (where, e)) from None
