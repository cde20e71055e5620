"""A rollout in progress, in Consul KV, so a killed run can be resumed (or aborted).

    medic/<env>/rollout/<service>
      {"v": 1, "image": "repo:tag", "image_id": "sha256:...", "from_image": "repo:tag",
       "from_image_id": "sha256:...", "phase": "rolling" | "rolling-back" | "failed",
       "plan": ["start one new instance", ...], "step": k, "new": [container ids started],
       "old": [container ids retired], "started_at": epoch, "updated_at": epoch, "by": "...",
       "reason": why it is rolling back or failed (or null)}

Only the holder of the service lock writes it. It records intent; the executor always
re-observes before a step, so a stale document can never make it act on a container
that is already gone.
"""
import json
import time

from ..core import keys
from ..core.errors import ConsulError
from ..consul.consul_errors import failures as consul_failures

VERSION = 1
PHASES = ("rolling", "rolling-back", "failed")


def state_key(env, service):
    return keys.key(env, "rollout", service)


def parse(raw, key="rollout"):
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("phase") not in PHASES:
            raise ValueError("not a version %d rollout document" % VERSION)
        for k in ("image", "image_id", "from_image", "from_image_id"):
            if not isinstance(doc.get(k), str) or not doc[k]:
                raise ValueError("%s missing" % k)
        doc.setdefault("new", [])
        doc.setdefault("old", [])
        return doc
    except (ValueError, TypeError) as e:
        raise ConsulError("KV %s holds a corrupt rollout state (%s); fix or delete it" % (key, e)) from None


def new(image, image_id, from_image, from_image_id, plan_lines, by, now=None):
    now = time.time() if now is None else now
    return {"v": VERSION, "image": image, "image_id": image_id, "from_image": from_image,
            "from_image_id": from_image_id, "phase": "rolling", "plan": list(plan_lines), "step": 0,
            "new": [], "old": [], "started_at": now, "updated_at": now, "by": by, "reason": None}


class Store:
    def __init__(self, client, env, service):
        self.client, self.key = client, state_key(env, service)

    def load(self):
        try:
            _, item = self.client.kv.get(self.key, consistency="consistent")
        except consul_failures() as e:
            raise ConsulError("cannot read KV %s: %s" % (self.key, _reason(e))) from None
        return parse(item["Value"] if item else None, self.key)

    def save(self, doc):
        doc["updated_at"] = time.time()
        try:
            ok = self.client.kv.put(self.key, json.dumps(doc, sort_keys=True))
        except consul_failures() as e:
            raise ConsulError("cannot write KV %s: %s" % (self.key, _reason(e))) from None
        if not ok:
            raise ConsulError("KV %s: write refused" % self.key)

    def clear(self):
        try:
            self.client.kv.delete(self.key)
        except consul_failures() as e:
            raise ConsulError("cannot delete KV %s: %s" % (self.key, _reason(e))) from None


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
