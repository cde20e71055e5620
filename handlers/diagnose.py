"""Naming what is really wrong when a Consul call of medic-heal failed.

A consistent read or a session needs a leader; without one they time out or fail with
messages that do not say so. Right after the local agent (re)starts, its node is not in
the catalog yet, and a session fails with "rpc error ... Missing node registration",
which looks like a lost leader but is not. A few short extra questions tell them apart:

    GET /v1/status/leader?stale          no answer / non-200 -> servers do not answer
                                         "" -> no cluster leader (quorum lost?)
    GET /v1/agent/self + /v1/catalog/node/<own node>?stale
                                         node missing -> the agent is not ready yet

(When the arch helper's handlers/consul_errors.py lands, this belongs there.)
"""
from .errors import ConsulTimeout, MedicError

SERVERS = "Consul servers do not answer (no cluster leader? quorum lost?): "
NO_LEADER = "no cluster leader (quorum lost?): "
NOT_READY = ("the local Consul agent is not ready (its node %s is not registered in the catalog yet: "
             "restarted moments ago?): ")


def cause(st, error=""):
    """A prefix naming the cause of `error` (a Consul failure's text), or ''."""
    from . import lighthttp

    try:
        with lighthttp.Connection(st._replace(timeout=min(st.timeout, 3.0))) as conn:
            resp = conn.request("GET", "/v1/status/leader", [("stale", None)])
            if resp.status != 200:
                return SERVERS  # the local agent answers, but cannot reach a server that knows
            leader = resp.json()
            if not leader:
                return NO_LEADER
            node = _unregistered_node(conn)
    except ConsulTimeout:
        return SERVERS
    except MedicError:
        return ""  # the agent itself is not there: the original error says so
    if node:
        return NOT_READY % node
    if "rpc error" in error or "No cluster leader" in error:
        # a leader is still named (the survivors have not noticed yet) but cannot be reached
        return "Consul servers unreachable (leader %s lost?): " % leader
    return ""


def _unregistered_node(conn):
    """The local agent's node name when the catalog does not have it yet, else None."""
    resp = conn.request("GET", "/v1/agent/self")
    if resp.status != 200:
        return None
    try:
        me = resp.json()
        name = (me.get("Config") or {}).get("NodeName") or (me.get("Member") or {}).get("Name")
    except (ValueError, AttributeError):
        return None
    if not name:
        return None
    resp = conn.request("GET", "/v1/catalog/node/" + lighthttp_quote(name), [("stale", None)])
    if resp.status != 200:
        return None
    try:
        return name if resp.json() is None else None
    except ValueError:
        return None


def lighthttp_quote(s):
    from urllib.parse import quote
    return quote(s, safe="")
