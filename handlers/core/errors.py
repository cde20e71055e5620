"""Domain errors. The wrapper in `handlers.runtime` turns each into one status line
and the UNKNOWN exit state (3): nothing was decided, nothing was changed."""


class MedicError(Exception):
    """Base: a failure that is explained by its message alone (no traceback needed)."""
    kind = "error"


class UsageError(MedicError):
    kind = "usage"


class SpecError(MedicError):
    """A spec file that is missing, unreadable, invalid or duplicated."""
    kind = "spec"


class PayloadError(MedicError, ValueError):
    """A watch payload on stdin that cannot be understood.

    The ONE definition: the parsers in `watches/` raise this class too (`watches`
    re-exports it; it imports nothing else from handlers), so a payload error is
    a MedicError wherever it is caught: one line, exit 3."""
    kind = "payload"


class ConsulError(MedicError):
    """Consul unreachable, timing out, refusing (ACL) or answering nonsense."""
    kind = "consul"


class ConsulTimeout(ConsulError):
    """Consul accepted the connection but did not answer in time."""


class EngineError(MedicError):
    """The Docker engine (or compose) unreachable or failing."""
    kind = "engine"


class DeadlineExceeded(MedicError):
    kind = "timeout"
