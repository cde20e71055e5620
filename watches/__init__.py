"""What Consul TELLS us: one pure module per watch payload type.

Each module turns a watch handler's stdin JSON into typed, immutable objects, or
raises `watches.PayloadError` with one line naming the JSON path that is wrong.
No I/O, no Consul, no Docker.
"""


class PayloadError(ValueError):
    """A watch payload that is not what its watch type sends."""
