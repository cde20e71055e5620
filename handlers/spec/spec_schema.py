"""Spec validation against specs/schema.json (JSON Schema 2020-12): the cold path.

Only handlers.spec calls this, and only for a file the spec cache does not hold:
importing jsonschema costs ~70 ms of CPU, which the `medic-check` hot path never pays.
Errors name the file, the JSON path and the problem, and inside `scale` the branch
its `driver` picks.
"""
import json

from ..core.errors import SpecError

_validator = None


def _schema_validator(schema_path):
    global _validator
    if _validator is None:
        import jsonschema
        with open(schema_path, encoding="utf-8") as f:
            schema = json.load(f)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validator = cls(schema)
    return _validator


def _error_path(err):
    path = "$"
    for p in err.absolute_path:
        path += "[%d]" % p if isinstance(p, int) else "." + str(p)
    return path


def validate(doc, path, schema_path):
    """Raise SpecError naming file, JSON path and problem; return nothing."""
    import jsonschema

    v = _schema_validator(schema_path)
    try:
        errors = sorted(v.iter_errors(doc), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    except RecursionError:
        raise SpecError("%s: $: nested too deeply" % path) from None
    if errors:
        best = _scale_branch_error(v, jsonschema.exceptions.best_match(errors), doc)
        msg = best.message
        if best.validator == "oneOf" and _error_path(best).endswith(".scale"):
            msg = "scale must be {driver: compose, project, file, service} or {driver: swarm, service}"
        if len(msg) > 200:
            msg = msg[:197] + "..."
        raise SpecError("%s: %s: %s" % (path, _error_path(best), msg))


def _scale_branch_error(v, best, doc):
    """Inside `scale`, name the error of the branch its `driver` picks (not "'swarm' was expected")."""
    parts = list(best.absolute_path)
    if "scale" not in parts:
        return best
    at = parts.index("scale") + 1
    scale = doc
    for p in parts[:at]:
        scale = scale[p] if isinstance(scale, (dict, list)) else None
    branches = {"compose": 0, "swarm": 1}
    if not isinstance(scale, dict) or scale.get("driver") not in branches:
        return best
    sub = v.schema["$defs"]["scale"]["oneOf"][branches[scale["driver"]]]
    errs = list(type(v)(sub).iter_errors(scale))
    if not errs:
        return best
    errs[0].path.extendleft(reversed(parts[:at]))
    return errs[0]
