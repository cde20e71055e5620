"""rollout_exec.Executor with a simulated engine+Consul (a test double) and a real LB file."""
import io

from consul_medic.handlers.rollout import rollout_exec
from consul_medic.handlers.replace import rollout_io
from consul_medic.handlers.replace.rollout_io import Detail
from consul_medic.handlers.replace.rollout_plan import Box, View, serving
from consul_medic.handlers.core.status import Status
from consul_medic.handlers.core.progress import Progress

OLD, NEW = "sha256:old", "sha256:new"


class FakeDriver:
    """Containers as a dict; a started container of a `sick` image never passes."""

    def __init__(self, n=3, sick=(), lb=None):
        self.boxes, self.seq, self.sick, self.lb = {}, 0, set(sick), lb
        self.log, self.max_serving, self.min_serving = [], 0, 99
        for _ in range(n):
            self._add(OLD, True)
        self._track()

    def _add(self, image, passing):
        self.seq += 1
        cid = "c%d" % self.seq
        self.boxes[cid] = Box(cid, "web-%d" % self.seq, image, "running", passing, False, False)
        return cid

    def _track(self):
        n = sum(1 for b in self.boxes.values() if serving(b))
        self.max_serving, self.min_serving = max(self.max_serving, n), min(self.min_serving, n)
        if self.lb is not None:
            with open(self.lb, "w") as f:
                f.write("".join("server 127.0.0.1:%d;\n" % (10000 + int(b.id[1:])) for b in self.boxes.values()
                                if serving(b)))

    def image_id(self, ref):
        return {"old:1": OLD, "new:1": NEW, "sick:1": "sha256:sick"}[ref]

    def view(self, retiring=()):
        boxes = tuple(b._replace(retiring=b.id in retiring) for b in self.boxes.values())
        details = {b.id: Detail(b.id, b.name, {OLD: "old:1", NEW: "new:1"}.get(b.image, "sick:1"), 0.0,
                                ["127.0.0.1:%d" % (10000 + int(b.id[1:]))], [("n", b.id)]) for b in boxes}
        return View(boxes, 0), details

    def start(self, ref):
        img = self.image_id(ref)
        cid = self._add(img, img not in self.sick)
        self.log.append(("start", ref))
        self._track()
        return cid

    def create(self, ref):
        img = self.image_id(ref)
        cid = self._add(img, img not in self.sick)
        self.boxes[cid] = self.boxes[cid]._replace(state="created", passing=None)
        self.log.append(("create", ref))
        return [cid]

    def run(self, ids):
        for cid in ids:
            img = self.boxes[cid].image
            self.boxes[cid] = self.boxes[cid]._replace(state="running", passing=img not in self.sick)
        self.log.append(("run", len(ids)))
        self._track()

    def maintenance(self, detail, on=True):
        self.boxes[detail.id] = self.boxes[detail.id]._replace(maintenance=on, passing=False)
        self.log.append(("maint", detail.id))
        self._track()

    def stop(self, cid, timeout=None):
        self.boxes.pop(cid, None)
        self.log.append(("stop", cid))
        self._track()

    def remove(self, cid):
        self.boxes.pop(cid, None)
        self._track()


class MemStore:
    def __init__(self, doc=None):
        self.doc, self.saves = doc, 0

    def load(self):
        return None if self.doc is None else dict(self.doc)

    def save(self, doc):
        self.doc, self.saves = dict(doc), self.saves + 1

    def clear(self):
        self.doc = None


def executor(driver, store, **kw):
    out = Progress(io.StringIO(), tty=False)
    alerts, records = [], []
    kw.setdefault("sleep", lambda s: None)
    ex = rollout_exec.Executor(driver, store, 3, "svc", out, audit=records.append,
                               alert=lambda reason, live: alerts.append(reason),
                               record=lambda ref: {"image": ref}, **kw)
    return ex, out, alerts, records


def test_rolls_all_and_never_below_declared():
    d, st = FakeDriver(), MemStore()
    ex, out, alerts, records = executor(d, st)
    o = ex.run("new:1")
    assert o.status == Status.OK and "now on new:1" in o.text
    assert sorted(b.image for b in d.boxes.values()) == [NEW] * 3
    assert d.min_serving == 3 and d.max_serving == 4
    # the 2nd and 3rd new containers are created ahead while the one before comes up, then only started
    assert [k for k, _ in d.log] == ["start", "create", "maint", "stop", "run", "create", "maint", "stop", "run",
                                     "maint", "stop"]
    assert st.doc is None and not alerts
    assert out.stream.getvalue().count("step ") == 12  # each step: a line when it starts, one when done


def test_sick_image_rolls_back_and_alerts():
    d, st = FakeDriver(sick={"sha256:sick"}), MemStore()
    clock = iter(range(0, 10000, 5))
    ex, _, alerts, _ = executor(d, st, deadline=20, clock=lambda: next(clock))
    o = ex.run("sick:1")
    assert o.status == Status.CRITICAL and "rolled back to old:1" in o.text
    assert sorted(b.image for b in d.boxes.values()) == [OLD] * 3
    assert d.min_serving == 3 and st.doc is None
    assert len(alerts) == 2 and "rolling back" in alerts[0]


def test_pause_between_steps_stops_and_keeps_state():
    d, st = FakeDriver(), MemStore()
    calls = []

    def paused():
        calls.append(1)
        return "paused by ops: maintenance window" if len(calls) > 3 else None
    ex, _, _, _ = executor(d, st, paused=paused)
    o = ex.run("new:1")
    assert o.status == Status.WARNING and "paused" in o.text and "run again to resume" in o.text
    assert st.doc["phase"] == "rolling" and st.doc["step"] == 4  # stopped before a start, never after one
    assert d.min_serving == 3 and len(d.boxes) == 3
    ex2, _, _, _ = executor(d, st)
    o = ex2.run("new:1")
    assert o.status == Status.OK and sorted(b.image for b in d.boxes.values()) == [NEW] * 3


def test_paused_at_start_refuses_without_action():
    d, st = FakeDriver(), MemStore()
    ex, _, _, records = executor(d, st, paused=lambda: "paused by ops: x")
    o = ex.run("new:1")
    assert o.status == Status.WARNING and "refused: paused" in o.text and d.log == [] and st.doc is None
    assert records[-1]["decision"] == "refuse"


def test_lb_file_waits(tmp_path):
    lbf = str(tmp_path / "lb.conf")
    d, st = FakeDriver(lb=lbf), MemStore()
    ex, _, _, _ = executor(d, st, lb=rollout_io.LbFile(lbf, sleep=lambda s: None))
    assert ex.run("new:1").status == Status.OK
    text = open(lbf).read()
    assert text.count("server") == 3 and "127.0.0.1:10001;" not in text


def test_lb_lists_matches_whole_addresses_only():
    text = "server 127.0.0.1:32768 max_fails=0;\nserver 127.0.0.11:80;\n"
    assert rollout_io.lb_lists(text, "127.0.0.1:32768")
    assert not rollout_io.lb_lists(text, "127.0.0.1:3276")
    assert not rollout_io.lb_lists(text, "127.0.0.1:80")
    assert rollout_io.lb_lists(text, "127.0.0.11:80")


def test_a_different_image_is_refused_while_one_is_in_progress_and_abort_rolls_back():
    d, st = FakeDriver(), MemStore()
    calls = []
    ex, _, _, _ = executor(d, st, paused=lambda: calls.append(1) or ("p" if len(calls) > 3 else None))
    ex.run("new:1")
    assert st.doc["phase"] == "rolling"
    ex2, _, _, _ = executor(d, st)
    o = ex2.run("old:1")
    assert o.status == Status.WARNING and "in progress" in o.text
    o = ex2.run(None, abort=True)
    assert o.status == Status.CRITICAL and "rolled back to old:1" in o.text and "aborted" in o.text
    assert sorted(b.image for b in d.boxes.values()) == [OLD] * 3 and st.doc is None and d.min_serving == 3


def test_dry_run_changes_nothing():
    d, st = FakeDriver(), MemStore()
    ex, _, _, _ = executor(d, st)
    o = ex.run("new:1", dry_run=True)
    assert o.status == Status.OK and "6 step(s)" in o.text and "  1. start one new instance of new:1" in o.text
    assert d.log == [] and st.doc is None


def test_progress_bar_only_on_a_terminal():
    plain = Progress(io.StringIO(), total=4, tty=False)
    plain.line("step 1")
    plain.step_done()
    plain.close()
    assert plain.stream.getvalue() == "step 1\n"
    tty = Progress(io.StringIO(), total=4, tty=True)
    tty.line("step 1")
    tty.step_done()
    tty.close()
    text = tty.stream.getvalue()
    assert "step 1\n" in text and "1/4 steps" in text and "#" * 7 in text and text.endswith("\r\033[K")
