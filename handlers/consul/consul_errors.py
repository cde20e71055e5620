"""The one place that explains a Consul failure in words an operator can act on.

A consistent read, a session or a CAS write needs a cluster leader; without one
they time out or fail with texts that do not say so ("rpc error ...", "No cluster
leader", a bare timeout). ACL refusals come back as HTTP 403 with "Permission
denied" or "ACL not found". `explain(settings, error)` names the cause:

    ACL denied              the token is unknown or lacks the right (no probe needed)
    agent down              nothing answers at the configured address
    servers unreachable     the local agent answers, but not with a leader's view
    no leader               the servers answer that there is no leader (quorum lost?)
    agent not ready         the local agent's node is not in the catalog yet (restarted
                            moments ago): a session then fails with "rpc error ...
                            Missing node registration", which is not a lost leader

It asks a few short questions (`GET /v1/status/leader?stale`, `/v1/agent/self`,
`/v1/catalog/node/<own node>?stale`; at most 3 s each) only when the text alone does
not say. It never raises: explaining must not fail. (medic-heal's healer uses `cause`.)
"""
import sys

from ..core.errors import ConsulError, ConsulTimeout, MedicError

ACL = "ACL denied (token unknown or lacking the right): "
AGENT_DOWN = "Consul agent not reachable at %s: "
SERVERS = "Consul servers do not answer (no cluster leader? quorum lost?): "
NO_LEADER = "no cluster leader (quorum lost?): "
LEADER_LOST = "Consul servers unreachable (leader %s lost?): "
NOT_READY = ("the local Consul agent is not ready (its node %s is not registered in the catalog yet: "
             "restarted moments ago?): ")

_ACL_TEXT = ("permission denied", "acl not found", "http 403", "403 forbidden")


def failures():
    """The exceptions a Consul client's call raises when Consul fails: ConsulError (the light
    clients), OSError (sockets; requests' errors under py-consul) and py-consul's ConsulException
    (counted once py-consul is loaded: no py-consul client exists before)."""
    exceptions = sys.modules.get("consul.exceptions")
    return (ConsulError, OSError) + ((exceptions.ConsulException,) if exceptions is not None else ())


def is_acl(error):
    text = str(error).lower()
    return any(t in text for t in _ACL_TEXT)


def cause(settings, error=""):
    """The cause as a prefix ('no cluster leader (quorum lost?): ') or '' when nothing more is known."""
    try:
        return _cause(settings, str(error))
    except Exception:  # noqa: BLE001 boundary: explaining never fails over the failure it explains
        return ""


def explain(settings, error):
    """`error` (exception or text) -> one line: the cause, then the original text (token scrubbed)."""
    text = " ".join(str(error).split())
    try:
        text = settings.redact(text)
    except (AttributeError, TypeError):  # settings that cannot redact: the text as it is
        pass
    prefix = cause(settings, text)
    return text if not prefix or text.startswith(prefix) else prefix + text


def _cause(settings, text):
    from . import lighthttp

    if is_acl(text):
        return ACL
    try:
        with lighthttp.Connection(settings._replace(timeout=min(settings.timeout, 3.0))) as conn:
            resp = conn.request("GET", "/v1/status/leader", [("stale", None)])
            if resp.status == 403:
                return ACL
            if resp.status != 200:
                return SERVERS  # the local agent answers, but cannot reach a server that knows
            leader = resp.json()
            node = _unregistered_node(conn) if leader else None
    except ConsulTimeout:
        return SERVERS
    except MedicError:
        # the agent itself is not there; lighthttp's own text already says "cannot connect"
        return "" if "cannot connect" in text else AGENT_DOWN % settings.addr
    if not leader:
        return NO_LEADER
    if node:
        return NOT_READY % node
    if "rpc error" in text or "No cluster leader" in text:
        # a leader is still named (the survivors have not noticed yet) but cannot be reached
        return LEADER_LOST % leader
    return ""


def _unregistered_node(conn):
    """The local agent's node name when the catalog does not have it yet, else None."""
    from .api import segment

    resp = conn.request("GET", "/v1/agent/self")
    if resp.status != 200:
        return None
    try:
        me = resp.json()
        name = (me.get("Config") or {}).get("NodeName") or (me.get("Member") or {}).get("Name")
    except (MedicError, AttributeError):
        return None
    if not name:
        return None
    resp = conn.request("GET", "/v1/catalog/node/" + segment(name), [("stale", None)])
    if resp.status != 200:
        return None
    try:
        return name if resp.json() is None else None
    except MedicError:
        return None


def leader_lost(text):
    """Does an explained failure (cause prefix + text) say the cluster had no reachable leader?"""
    return any(str(text).startswith(p.split("%s")[0]) for p in (SERVERS, NO_LEADER, LEADER_LOST))


def wait_for_leader(settings, seconds, clock, sleep, step=0.25, key="medic"):
    """Poll until the cluster has a leader that answers -> True, or False after `seconds`
    (a leader election takes a few seconds; a lost quorum does not end by itself).

    "Answers" is a consistent read of `key` (200 or 404; 403 too: the servers resolved the
    token): in the first second after a leader died, the survivors still NAME it in
    /v1/status/leader, and a run that took that for a new leader failed again at once."""
    from . import lighthttp
    from .api import kv

    deadline = clock() + seconds
    while True:
        try:
            with lighthttp.Connection(settings._replace(timeout=min(settings.timeout, 2.0))) as conn:
                resp = conn.request("GET", kv(key), [("consistent", None)])
                if resp.status in (200, 403, 404):
                    return True
        except MedicError:
            pass
        if clock() + step > deadline:
            return False
        sleep(step)
