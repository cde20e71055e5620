"""Test doubles for medic-heal's orchestration (issue 13): a fake Consul, a fake engine, scalers,
a fixed clock. They live here, never in handlers/.

FakeConsul stands where handlers.healing.ConsulAccess stands: `.client` / `.renew_client` look
like py-consul's (kv.get/put/delete with ModifyIndex, CAS, acquire/release, blocking get;
session.create/renew/destroy), `.instances(service)` answers like the consistent health read.
FakeEngine answers what observe.py asks the docker SDK (api.containers, api.inspect_container,
info, containers.get). FakeComposeScaler does what `compose up --scale N` does to the fake
engine: restart stopped containers, create new ones, up to N.
"""
import itertools
import time
import uuid

from consul_medic.handlers.consul import health
from consul_medic.handlers.engine.scaler import Result, compose_argv

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


class Clock:
    """A fixed clock that only moves when told to (or when a fake blocking query waits)."""

    def __init__(self, now=1_800_000_000.0):
        self.now = float(now)

    def __call__(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(0.0, seconds)

    advance = sleep


# -- Consul -------------------------------------------------------------------------------
class _KV:
    def __init__(self, consul):
        self.c = consul
        self.data = {}

    def get(self, key, index=None, wait=None, consistency=None, recurse=False, **kw):
        self.c.calls.append(("kv.get", key))
        item = self.data.get(key)
        if index is not None and wait is not None and (item is None or item["ModifyIndex"] <= int(index)):
            self.c.clock.sleep(_seconds(wait))  # a blocking query that saw no change
            item = self.data.get(key)
        return self.c.index, (dict(item) if item else None)

    def put(self, key, value, cas=None, acquire=None, release=None, **kw):
        self.c.calls.append(("kv.put", key))
        item = self.data.get(key)
        if cas is not None and ((cas == 0 and item is not None) or (cas != 0 and (item is None or
                                                                                 item["ModifyIndex"] != cas))):
            return False
        session = item["Session"] if item else None
        if acquire is not None:
            if acquire not in self.c.sessions or (session and session != acquire):
                return False
            session = acquire
        if release is not None:
            if session != release:
                return False
            session = None
        raw = value.encode() if isinstance(value, str) else value
        idx = self.c.bump()
        self.data[key] = {"Key": key, "Value": raw, "ModifyIndex": idx,
                          "CreateIndex": item["CreateIndex"] if item else idx, "Session": session, "Flags": 0}
        return True

    def delete(self, key, cas=None, recurse=None, **kw):
        self.c.calls.append(("kv.delete", key))
        item = self.data.get(key)
        if cas is not None and (item is None or item["ModifyIndex"] != int(cas)):
            return False
        if item is not None:
            del self.data[key]
            self.c.bump()
        return True

    def value(self, key):
        item = self.data.get(key)
        return item["Value"] if item else None


class _Session:
    def __init__(self, consul):
        self.c = consul

    def create(self, name=None, behavior="release", ttl=None, lock_delay=None, **kw):
        sid = str(uuid.uuid4())
        self.c.sessions[sid] = {"name": name, "ttl": ttl}
        return sid

    def renew(self, sid, **kw):
        return self.c.sessions.get(sid)

    def destroy(self, sid, **kw):
        self.c.sessions.pop(sid, None)
        for item in self.c.kv.data.values():
            if item["Session"] == sid:  # behavior=release
                item["Session"] = None
                item["ModifyIndex"] = self.c.bump()
        return True


class FakeConsul:
    def __init__(self, clock):
        self.clock = clock
        self.index = 10
        self.kv = _KV(self)
        self.session = _Session(self)
        self.sessions = {}
        self.services = {}  # service -> {instance id: health.Instance}
        self.calls = []
        self.client = self.renew_client = self
        self.st = None

    def __call__(self, st):  # the consul_factory of healing.Parts
        self.st = st
        return self

    def bump(self):
        self.index += 1
        return self.index

    def instances(self, service):
        return self.index, sorted(self.services.get(service, {}).values(), key=lambda i: (i.node, i.id))

    def register(self, service, container, passing=True, node="monitor", port=None):
        """An instance the way medic-register writes it, for a FakeEngine container."""
        iid = "%s:%s:%d" % (node, container["Name"].lstrip("/"), port or 80)
        labels = (container.get("Config") or {}).get("Labels") or {}
        meta = {"medic_container_id": container["Id"], "medic_compose_project": labels.get(COMPOSE_PROJECT, ""),
                "medic_compose_service": labels.get(COMPOSE_SERVICE, "")}
        failing = () if passing else (health.Failing("service:" + iid, "http", "critical"),)
        self.services.setdefault(service, {})[iid] = health.Instance(iid, node, "127.0.0.1", port or 80, (), meta,
                                                                     passing, failing)
        self.bump()
        return iid

    def deregister(self, service, container_id):
        insts = self.services.get(service, {})
        for iid in [i for i, v in insts.items() if v.meta.get("medic_container_id") == container_id]:
            del insts[iid]
        self.bump()


# -- the engine ---------------------------------------------------------------------------
class _API:
    def __init__(self, engine):
        self.e = engine

    def containers(self, all=True, filters=None):
        want = dict(x.split("=", 1) for x in (filters or {}).get("label", []) if "=" in x)
        out = []
        for attrs in self.e.attrs.values():
            labels = attrs["Config"]["Labels"]
            if not [k for k, v in want.items() if labels.get(k) != v]:
                out.append({"Id": attrs["Id"], "Labels": labels, "State": attrs["State"]["Status"]})
        return out

    def inspect_container(self, cid):
        return self.e.attrs[cid]


class _Handle:
    def __init__(self, engine, cid):
        self.e, self.id = engine, cid

    def stop(self, timeout=10):
        self.e.exit(self.id, 143)

    def remove(self, force=False):
        self.e.attrs.pop(self.id, None)


class _Containers:
    def __init__(self, engine):
        self.e = engine

    def get(self, cid):
        return _Handle(self.e, cid)


class FakeEngine:
    def __init__(self, clock, host="monitor"):
        self.clock, self.host = clock, host
        self.attrs = {}
        self.api = _API(self)
        self.containers = _Containers(self)
        self._n = itertools.count(1)

    def info(self):
        return {"Name": self.host}

    def close(self):
        pass

    def run(self, project, service="web"):
        n = next(self._n)
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        t = _iso(self.clock())
        self.attrs[cid] = {"Id": cid, "Name": "/%s-%s-%d" % (project, service, n), "Created": t,
                           "Config": {"Labels": {COMPOSE_PROJECT: project, COMPOSE_SERVICE: service}},
                           "State": {"Status": "running", "StartedAt": t, "ExitCode": 0, "OOMKilled": False},
                           "NetworkSettings": {"Ports": {}}}
        return self.attrs[cid]

    def start(self, cid):
        self.attrs[cid]["State"] = {"Status": "running", "StartedAt": _iso(self.clock()), "ExitCode": 0,
                                    "OOMKilled": False}

    def exit(self, cid, code=137, oom=False):
        self.attrs[cid]["State"] = dict(self.attrs[cid]["State"], Status="exited", ExitCode=code, OOMKilled=oom)

    def of(self, project, service="web"):
        return [a for a in self.attrs.values() if a["Config"]["Labels"] == {COMPOSE_PROJECT: project,
                                                                            COMPOSE_SERVICE: service}]


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % round((t % 1) * 1e9)


def _seconds(wait):
    w = str(wait)
    return float(w[:-2]) / 1000.0 if w.endswith("ms") else float(w.rstrip("s"))


# -- scalers ------------------------------------------------------------------------------
class RecordingScaler:
    """Test double: records (n, remove, replace) and returns a configured result; changes nothing."""

    def __init__(self, scale, ok=True):
        self.scale_spec, self.ok, self.calls = scale, ok, []

    def argv(self, n):
        return compose_argv(["docker", "compose"], self.scale_spec, n)

    def scale(self, n, remove=(), replace=None):
        self.calls.append((n, tuple(remove), replace))
        return Result(self.ok, self.argv(n), 0 if self.ok else 1, "", 0.0, list(remove))


class FakeComposeScaler(RecordingScaler):
    """What `compose up -d --no-recreate --scale web=N` does to a FakeEngine."""

    def __init__(self, scale, engine, calls):
        super().__init__(scale)
        self.engine, self.calls = engine, calls

    def scale(self, n, remove=(), replace=None):
        for cid in ([replace] if replace else []) + list(remove):
            self.engine.attrs.pop(cid, None)
        mine = self.engine.of(self.scale_spec.project, self.scale_spec.service)
        for a in mine:
            if a["State"]["Status"] != "running":
                self.engine.start(a["Id"])
        for _ in range(n - len(mine)):
            self.engine.run(self.scale_spec.project, self.scale_spec.service)
        return super().scale(n, remove, replace)
