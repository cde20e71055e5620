"""What Consul TELLS us: one pure module per watch payload type.

Each module turns a watch handler's stdin JSON into typed, immutable objects, or
raises `watches.PayloadError` with one line naming the JSON path that is wrong.
No I/O, no Consul, no Docker.

Layering: watches/ sits at the bottom with handlers' base modules. It imports only
`handlers.errors` (stdlib-only, no side effects), for the one `PayloadError` class
(a MedicError and a ValueError), and nothing else from handlers
(tests/system/test_architecture.py enforces it).
"""
