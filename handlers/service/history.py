"""What medic remembers per service, in Consul KV so every monitoring node shares it.

    medic/<env>/history/<service>   {"v": 1, "epoch": t, "circuit": t|null,
                                     "suspects": {container_id: first seen failing, ...},
                                     "actions": [{"time", "kind", "target", "result", "index"},
                                                 ...]}   (newest last, bounded)
    medic/<env>/circuit/<service>   present while the circuit is open (a marker for humans and
                                    medic-status; the history document is the authority)

Every write is a check-and-set on the ModifyIndex that was read, retried a few times on
a conflict, so two monitoring nodes never lose each other's records. A document that
does not parse is never overwritten silently: it raises ConsulError (nothing changes).
Only `medic-heal --reset` replaces it (`load(tolerate_corrupt=True)`, audited).
"""
import json
import time

from ..core import keys
from .heal_model import Action, History, EMPTY_HISTORY
from ..core.errors import ConsulError
from ..consul.consul_errors import failures as consul_failures

MAX_ACTIONS = 50
MAX_SUSPECTS = 100
VERSION = 1


def history_key(env, service):
    return keys.key(env, "history", service)


def circuit_key(env, service):
    return keys.key(env, "circuit", service)


def parse(raw, key="history"):
    """KV value (bytes/None) -> History. Raises ConsulError on a corrupt document."""
    if raw is None:
        return EMPTY_HISTORY
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise ValueError("not a version %d history document" % VERSION)
        actions = tuple(Action(float(a["time"]), str(a["kind"]), int(a["target"]), str(a["result"]),
                               a.get("index")) for a in doc.get("actions") or ())
        circuit = doc.get("circuit")
        suspects = tuple((str(k), float(v)) for k, v in sorted((doc.get("suspects") or {}).items()))
        return History(actions, float(doc.get("epoch") or 0.0), None if circuit is None else float(circuit),
                       suspects)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConsulError("KV %s holds a corrupt history (%s); fix or delete it" % (key, e)) from None


def dump(history):
    return json.dumps({"v": VERSION, "epoch": history.epoch, "circuit": history.circuit,
                       "suspects": dict(history.suspects[:MAX_SUSPECTS]),
                       "actions": [a._asdict() for a in history.actions[-MAX_ACTIONS:]]},
                      sort_keys=True).encode()


# -- pure transitions ----------------------------------------------------------
def settle(history, verdict):
    """Apply a verdict ('restored' | 'failed') to the last unverified action."""
    if verdict is None or not history.actions or history.actions[-1].result != "started":
        return history
    return history._replace(actions=history.actions[:-1] + (history.actions[-1]._replace(result=verdict),))


def apply(history, decision, now):
    """History after a decision's bookkeeping (settle verdict, circuit transition)."""
    h = settle(history, decision.settle)
    if tuple(decision.suspects) != tuple(h.suspects):
        h = h._replace(suspects=tuple(decision.suspects))
    if decision.circuit == "open":
        h = h._replace(circuit=now)
    elif decision.circuit == "close":
        h = h._replace(circuit=None, epoch=now)
    return h


def add_action(history, now, kind, target, result, index):
    actions = history.actions + (Action(now, kind, int(target), result, index),)
    return history._replace(actions=actions[-MAX_ACTIONS:])


def reset(history, now):
    """--reset: close the circuit, forget failures (backoff) before now."""
    return history._replace(circuit=None, epoch=now)


# -- KV I/O ----------------------------------------------------------------------
class Store:
    """Read and CAS-write one service's history through a py-consul client."""

    def __init__(self, client, env, service):
        self.client, self.env, self.service = client, env, service
        self.key = history_key(env, service)
        self.modify_index = 0
        self.history = EMPTY_HISTORY
        self.corrupt = None  # what a tolerated corrupt document said (its error and first bytes)

    def load(self, tolerate_corrupt=False):
        try:
            _, item = self.client.kv.get(self.key, consistency="consistent")
        except consul_failures() as e:
            raise ConsulError("cannot read KV %s: %s" % (self.key, _reason(e))) from None
        self.modify_index = int(item["ModifyIndex"]) if item else 0
        raw = item["Value"] if item else None
        try:
            self.history = parse(raw, self.key)
        except ConsulError as e:
            if not tolerate_corrupt:
                raise
            self.corrupt = {"error": str(e), "value": (raw or b"")[:200].decode("utf-8", "replace")}
            self.history = EMPTY_HISTORY
        return self.history

    def update(self, fn, attempts=5):
        """Write fn(current history) with check-and-set; re-read and retry on a conflict."""
        for _ in range(attempts):
            new = fn(self.history)
            if new == self.history and self.modify_index and self.corrupt is None:
                return new
            try:
                ok = self.client.kv.put(self.key, dump(new), cas=self.modify_index)
            except consul_failures() as e:
                raise ConsulError("cannot write KV %s: %s" % (self.key, _reason(e))) from None
            if ok:
                self._mirror_circuit(self.history, new)
                self.history = new
                self.load(tolerate_corrupt=self.corrupt is not None)
                return new
            self.load(tolerate_corrupt=self.corrupt is not None)
            time.sleep(0.05)
        raise ConsulError("KV %s: check-and-set kept conflicting" % self.key)

    def _mirror_circuit(self, old, new):
        if (old.circuit is None) == (new.circuit is None):
            return
        key = circuit_key(self.env, self.service)
        try:
            if new.circuit is not None:
                self.client.kv.put(key, json.dumps({"opened": new.circuit}))
            else:
                self.client.kv.delete(key)
        except consul_failures():
            pass  # a marker only; the history document is the authority


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
