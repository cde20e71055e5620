"""Rolling update, doing: the compose driver (engine, compose, Consul, the LB output file).

    ComposeDriver(spec, engine, conn)   conn: a lighthttp.Connection to the local Consul agent
      .image_id(ref)              the engine's image ID for a reference (UsageError when absent)
      .view(retiring)             -> (rollout_plan.View, {container id: Detail})
      .start(ref)                 one more container with `-f compose_override(spec, ref)`: its ID
      .maintenance(detail, on)    service maintenance for each of its Consul instances
      .stop(cid, timeout)         graceful stop (SIGTERM, then SIGKILL after `timeout`), then remove
      .remove(cid)                remove a container that is not running

Compose v2 restarts a service's exited containers on `up --scale N` (and an old container
may exit, being stopped in the background, while compose runs): `start` therefore runs
`up --no-start --no-recreate --scale S=<all containers>+k` (compose only creates) and starts
the containers it created itself, by ID. Exited containers are removed first (under a mutex
shared with the removals) so the count stays exact; any surplus compose created is removed.
"""
import re
import subprocess
import threading
import time
from collections import namedtuple

from ..service import observe, rollout_image
from ..core.errors import EngineError, UsageError
from .rollout_plan import Box, View
from ..consul import api
from ..engine.engine import failures as engine_failures, not_found as engine_not_found

Detail = namedtuple("Detail", "id name image_ref started addrs instances")
# addrs: ["address:port" of its Consul instances]; instances: [(node, service id)]

MAINT_PREFIX = "_service_maintenance:"
_OUTPUT_TAIL = 2000


def lb_lists(text, addr):
    """True when the LB config text names `addr` ('1.2.3.4:80') as a whole address."""
    return re.search(r"(?<![\w.:])%s(?!\d)" % re.escape(addr), text) is not None


class ComposeDriver:
    def __init__(self, spec, engine, conn, timeout=None, run=subprocess.run, base=None, environ=None):
        self.spec, self.engine, self.conn = spec, engine, conn
        self.environ = environ  # compose's environment (DOCKER_HOST of another engine); None: ours
        self.timeout = float(timeout or spec.heal.command_timeout)
        self._run, self._base = run, base
        self.mutex = threading.Lock()  # compose runs vs. removals (see the module doc)
        self.last_argv = None

    @property
    def base(self):
        if self._base is None:
            from ..engine import scaler
            self._base = scaler.compose_command(run=self._run)
        return self._base

    # -- reading -------------------------------------------------------------
    def image_id(self, ref):
        try:
            return self.engine.images.get(ref).id
        except engine_failures() as e:
            if isinstance(e, engine_not_found()):  # the SDK's ImageNotFound is a NotFound
                raise UsageError("image %s is not on the Docker engine (docker pull or build it first)" % ref) \
                    from None
            raise EngineError("Docker engine: image %s: %s" % (ref, _reason(e))) from None

    def containers(self):
        """[(attrs)] of every container of the compose service, any state (no one-offs)."""
        sc = self.spec.scale
        flt = {"label": ["%s=%s" % (observe.COMPOSE_PROJECT, sc.project),
                         "%s=%s" % (observe.COMPOSE_SERVICE, sc.service)]}
        try:
            out = []
            for s in self.engine.api.containers(all=True, filters=flt):
                if (s.get("Labels") or {}).get(observe.COMPOSE_ONEOFF, "False") == "True":
                    continue
                try:
                    out.append(self.engine.api.inspect_container(s["Id"]))
                except engine_not_found():
                    pass  # removed between list and inspect
            return out
        except engine_failures() as e:
            raise EngineError("Docker engine: listing %s/%s failed: %s" % (sc.project, sc.service, _reason(e))) \
                from None

    def view(self, retiring=()):
        _, instances = observe.consul_instances(self.conn, self.spec.service)
        attrs = self.containers()
        by_id = {a["Id"]: a for a in attrs}
        by_port = {}
        for a in attrs:
            for _, port in observe._ports(a):
                by_port.setdefault(port, a["Id"])
        mine = {}  # container id -> [Instance]
        remote = 0
        for inst in instances:
            cid = inst.meta.get("medic_container_id")
            if not (cid and cid in by_id):
                cid = None if cid else by_port.get(inst.port)
            if cid is None:
                remote += 1 if inst.passing else 0
                continue
            mine.setdefault(cid, []).append(inst)
        boxes, details = [], {}
        for a in attrs:
            cid, st = a["Id"], a.get("State") or {}
            insts = mine.get(cid, [])
            maint = any(f.check_id.startswith(MAINT_PREFIX) for i in insts for f in i.failing)
            passing = all(i.passing for i in insts) if insts else None
            name = (a.get("Name") or "").lstrip("/")
            state = "dead" if st.get("Dead") else (st.get("Status") or "unknown")
            boxes.append(Box(cid, name, a.get("Image"), state, passing, maint, cid in retiring))
            details[cid] = Detail(cid, name, (a.get("Config") or {}).get("Image") or a.get("Image"),
                                  observe.parse_time(st.get("StartedAt")),
                                  ["%s:%d" % (i.address, i.port) for i in insts], [(i.node, i.id) for i in insts])
        boxes.sort(key=lambda b: (b.name, b.id))
        return View(tuple(boxes), remote), details

    # -- doing -----------------------------------------------------------------
    def start(self, ref, count=1):
        """create() then run(): the new container's ID (count 1) or the list of them."""
        ids = self.create(ref, count)
        self.run(ids)
        return ids[0] if count == 1 else ids

    def create(self, ref, count=1):
        """`compose up --no-start --no-recreate --scale S=n+count` with the image override (none when `ref`
        is None: the compose file's image) -> [IDs of the containers compose created, not started]."""
        sc = self.spec.scale
        files = ["-f", sc.file] + (["-f", rollout_image.compose_override(self.spec, ref)] if ref else [])
        with self.mutex:
            for a in self.containers():
                if (a.get("State") or {}).get("Status") not in ("running", "restarting", "paused", "created"):
                    self.remove(a["Id"], locked=True)
            before = {a["Id"] for a in self.containers()}
            argv = list(self.base) + ["-p", sc.project] + files + [
                "up", "--no-start", "--no-recreate", "--scale", "%s=%d" % (sc.service, len(before) + count),
                sc.service]
            self.last_argv = argv
            try:
                p = self._run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=self.timeout, env=self.environ)
            except subprocess.TimeoutExpired:
                raise EngineError("%s timed out after %.0f s" % (" ".join(argv[:2]), self.timeout)) from None
            except OSError as e:
                raise EngineError("cannot run %s: %s" % (argv[0], e.strerror or e)) from None
            out = (p.stdout or b"").decode("utf-8", "replace")[-_OUTPUT_TAIL:]
            if p.returncode != 0:
                tail = (out.strip().splitlines() or ["no output"])[-1]
                raise EngineError("compose up failed (exit %d): %s" % (p.returncode, tail[:300]))
            added = sorted((a for a in self.containers() if a["Id"] not in before), key=lambda a: a.get("Created", ""))
            for a in added[count:]:
                self.remove(a["Id"], locked=True)  # one of ours was removed while compose counted
        if len(added) < count:
            raise EngineError("compose up created %d containers, expected %d" % (len(added), count))
        return [a["Id"] for a in added[:count]]

    def run(self, ids):
        for cid in ids:
            try:
                self.engine.api.start(cid)
            except engine_failures() as e:
                raise EngineError("starting %s failed: %s" % (cid[:12], _reason(e))) from None

    def maintenance(self, detail, on=True, reason="medic-rollout: replaced by a new instance"):
        """Service maintenance for each instance of the container, on the local agent."""
        params = [("enable", "true" if on else "false")] + ([("reason", reason)] if on else [])
        done = 0
        for _, sid in detail.instances:
            resp = self.conn.request("PUT", api.service_maintenance(sid), params)
            if resp.status == 200:
                done += 1
            elif resp.status != 404:  # 404: deregistered meanwhile (stopping): nothing to take out
                raise EngineError("Consul: maintenance for %s: HTTP %d" % (sid, resp.status))
        return done

    def stop(self, cid, timeout=None):
        try:
            c = self.engine.containers.get(cid)
            c.stop(**({} if timeout is None else {"timeout": int(timeout)}))
        except engine_not_found():
            return
        except engine_failures() as e:
            raise EngineError("stopping %s failed: %s" % (cid[:12], _reason(e))) from None
        self.remove(cid)

    def remove(self, cid, locked=False):
        if not locked:
            with self.mutex:
                return self.remove(cid, locked=True)
        try:
            self.engine.api.remove_container(cid, force=True)
        except engine_failures() as e:
            if isinstance(e, engine_not_found()) or "is already in progress" in str(e):
                return
            raise EngineError("removing %s failed: %s" % (cid[:12], _reason(e))) from None


LB_GRACE = 1.0  # seconds between the LB output dropping an instance and its SIGTERM (the reload applies it)


class LbFile:
    """The output file of `medic-lb`: does it list an address yet (or still)?"""

    def __init__(self, path, sleep=time.sleep, clock=time.monotonic):
        self.path, self.sleep, self.clock = path, sleep, clock

    def text(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait(self, addrs, present, timeout):
        """Wait until every addr is listed (present=True) or none is; True when it happened in time."""
        end = self.clock() + timeout
        while True:
            text = self.text()
            if all(lb_lists(text, a) == present for a in addrs):
                return True
            if self.clock() >= end:
                return False
            self.sleep(0.05)


def _reason(e):
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
