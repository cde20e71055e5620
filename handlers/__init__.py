"""consul-medic: what we DO. One small module per executable over a shared core.

Layers (base, access, domain, services, executables) and what each may import:
docs/architecture.md; tests/system/test_architecture.py holds the table and enforces it.

Import discipline: modules on the `medic-check` hot path (status, errors, durations,
runtime, options, settings, lighthttp, spec, spec_cache, health) import only the standard library at
module level, and not even all of it (no dataclasses, typing, http.client); heavy
packages (click, jsonschema, requests, consul, docker) are imported inside the
functions that need them. `make bench` measures what this buys.
"""
