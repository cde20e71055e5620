"""The drain record of a Docker host: medic/<env>/drain/<node>.

    {"phase": "draining" | "drained", "plan": [...], "node": "medic-host1", "at": epoch, "by": "..."}

medic-drain writes it before it moves anything and deletes it on --undo. A healer running
on that node should hold while it is there (`read(client, env, node)` is not None): the
host is being emptied for an upgrade, so nothing new should start on it.
"""
import json
import os
import socket
import time

from ..core import keys
from ..consul import kv
from ..core.errors import ConsulError
from ..consul.consul_errors import failures as consul_failures


def drain_key(env, node):
    return keys.key(env, "drain", node)


def read(client, env, node):
    """The record (dict) while the node is drained or being drained, else None."""
    doc, _ = kv.read(client, drain_key(env, node))
    if doc is None or (isinstance(doc, kv.Unreadable) and not doc.raw):
        return None  # absent, or an empty value
    return doc if isinstance(doc, dict) else {"phase": "unreadable", "node": node}


def write(client, env, node, doc):
    key = drain_key(env, node)
    body = dict(doc, node=node, at=time.time(), by="medic-drain@%s pid %d" % (socket.gethostname(), os.getpid()))
    try:
        ok = client.kv.put(key, json.dumps(body, sort_keys=True))
    except consul_failures() as e:
        raise ConsulError("cannot write KV %s: %s" % (key, _reason(e))) from None
    if not ok:
        raise ConsulError("KV %s: write refused" % key)


def clear(client, env, node):
    key = drain_key(env, node)
    try:
        client.kv.delete(key)
    except consul_failures() as e:
        raise ConsulError("cannot delete KV %s: %s" % (key, _reason(e))) from None


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
