"""drain_exec.Drainer over simulated hosts (a test double for engines and agents)."""
import io
from collections import namedtuple

from consul_medic.handlers.drain import drain_exec
from consul_medic.handlers.replace.rollout_io import Detail
from consul_medic.handlers.replace.rollout_plan import Box, View, serving
from consul_medic.handlers.core.status import Status
from consul_medic.handlers.core.progress import Progress

Spec = namedtuple("Spec", "service instances")


class World:
    def __init__(self):
        self.boxes = {}  # cid -> (node, service, Box)
        self.maint, self.seq, self.log, self.min_serving = set(), 0, [], {}

    def add(self, node, service, passing=True):
        self.seq += 1
        cid = "c%d" % self.seq
        self.boxes[cid] = (node, service, Box(cid, "%s-%s-%d" % (service, node, self.seq), "img", "running",
                                              passing, False, False))
        return cid

    def serving(self, service):
        return sum(1 for n, s, b in self.boxes.values() if s == service and serving(b) and n not in self.maint)

    def track(self):
        for s in {s for _, s, _ in self.boxes.values()}:
            self.min_serving[s] = min(self.min_serving.get(s, 99), self.serving(s))


class Drv:
    def __init__(self, world, node, service, sick=False):
        self.w, self.node, self.service, self.sick = world, node, service, sick

    def view(self, retiring=()):
        mine = [b for n, s, b in self.w.boxes.values() if n == self.node and s == self.service]
        if self.node in self.w.maint:
            mine = [b._replace(maintenance=True, passing=False) for b in mine]
        return View(tuple(mine), 0), {b.id: Detail(b.id, b.name, "img", 0, ["10.0.0.1:%s" % b.id[1:]],
                                                   [(self.node, b.id)]) for b in mine}

    def start(self, ref, count=1):
        ids = [self.w.add(self.node, self.service, passing=not self.sick) for _ in range(count)]
        self.w.log.append(("start", self.node, count))
        self.w.track()
        return ids[0] if count == 1 else ids

    def stop(self, cid, timeout=None):
        self.w.boxes.pop(cid, None)
        self.w.log.append(("stop", self.node, cid))
        self.w.track()

    def maintenance(self, detail, on=True, reason=""):
        n, s, b = self.w.boxes[detail.id]
        self.w.boxes[detail.id] = (n, s, b._replace(maintenance=on, passing=False))
        self.w.track()


class Conn:
    def __init__(self, world, node):
        self.w, self.node = world, node

    def call(self, method, path, params=None, body=None):
        on = dict(params)["enable"] == "true"
        (self.w.maint.add if on else self.w.maint.discard)(self.node)
        self.w.log.append(("maint" if on else "unmaint", self.node))
        self.w.track()


def drainer(world, nodes, specs, sick=(), eligible=None):
    hosts = {n: drain_exec.Host(n, Conn(world, n), {sp.service: Drv(world, n, sp.service, n in sick) for sp in specs},
                                True if eligible is None else n in eligible) for n in nodes}
    records = {}
    d = drain_exec.Drainer(hosts, specs, Progress(io.StringIO(), tty=False),
                           record=lambda n, doc: records.__setitem__(n, doc), sleep=lambda s: None,
                           clock=iter(range(0, 100000, 1)).__next__, deadline=30)
    return d, records


def test_drain_moves_three_instances_and_empties_the_host():
    w = World()
    for _ in range(3):
        w.add("h1", "web")
    w.track()
    d, records = drainer(w, ["h1", "h2", "h3"], [Spec("web", 3)])
    o = d.drain("h1")
    assert o.status == Status.OK and "safe to upgrade" in o.text and "3 stopped" in o.text
    assert sorted(n for n, _, _ in w.boxes.values()) == ["h2", "h2", "h3"]
    assert "h1" in w.maint and records["h1"]["phase"] == "drained"
    assert w.min_serving["web"] == 3
    kinds = [e[0] for e in w.log]
    assert kinds.index("maint") > max(i for i, k in enumerate(kinds) if k == "start")
    assert kinds.index("maint") < min(i for i, k in enumerate(kinds) if k == "stop")


def test_replacements_that_never_pass_stop_the_drain_before_maintenance():
    w = World()
    for _ in range(2):
        w.add("h1", "web")
    d, records = drainer(w, ["h1", "h2"], [Spec("web", 2)], sick=("h2",))
    o = d.drain("h1")
    assert o.status == Status.CRITICAL and "did not pass" in o.text
    assert not w.maint and sum(1 for n, _, _ in w.boxes.values() if n == "h1") == 2
    assert records["h1"]["phase"] == "draining"


def test_undo_with_rebalance_moves_back_and_keeps_serving():
    w = World()
    for n in ("h2", "h2", "h3"):
        w.add(n, "web")
    w.maint.add("h1")
    w.track()
    d, records = drainer(w, ["h1", "h2", "h3"], [Spec("web", 3)], eligible=("h2", "h3"))
    o = d.undo("h1", rebalance=True)
    assert o.status == Status.OK and "1 instance(s) move back" in o.text
    assert sorted(n for n, _, _ in w.boxes.values()) == ["h1", "h2", "h3"]
    assert not w.maint and records["h1"] is None and w.min_serving["web"] == 3


def test_dry_run_changes_nothing():
    w = World()
    w.add("h1", "web")
    d, records = drainer(w, ["h1", "h2"], [Spec("web", 1)])
    o = d.drain("h1", dry_run=True)
    assert o.status == Status.OK and "start 1 instance(s) of web on h2" in o.text
    assert w.log == [] and records == {}
