"""consul-medic: what we DO. One small module per executable over a shared core.

Import discipline: modules on the `medic-check` hot path (status, errors, runtime,
options, settings, lighthttp, spec, health) import only the standard library at
module level, and not even all of it (no dataclasses, typing, http.client); heavy
packages (click, jsonschema, requests, consul, docker) are imported inside the
functions that need them. `make bench` measures what this buys.
"""
