"""Rolling update, deciding: which step comes next, from a fresh view (pure, no I/O).

    plan(declared, view, target, resuming=False) -> Plan(kind, reason, steps)

`view` is what the executor just observed: every container of the service on this
engine (image ID, engine state, passing in Consul, in maintenance, being stopped by
us) and how many instances pass elsewhere. `target` is the image ID to roll to.

Steps, in the order they are to run:

    remove  C      a container of ours that is not running (compose would restart it)
    wait    C      a new-image container already started (a resumed run): wait until it passes
    start          one new container of the target image; wait until it passes (and the LB has it)
    retire  C      an old container: maintenance (the LB drops it), then a graceful stop, then remove

The invariant: no `retire` of a serving container is planned while fewer than
`declared` others would serve, so a `start` goes first whenever needed (one at a
time: at most declared + 1 serving). The executor runs only the first step, then
observes again and plans again, so a killed run, a crashed container or a restarted
one is simply part of the next view: resuming is re-planning.
"""
from collections import namedtuple

Box = namedtuple("Box", "id name image state passing maintenance retiring")
Box.__doc__ = """One container of the service on this engine.

image: image ID; state: engine state ('running', 'exited', ...); passing: True/False in
Consul, None when not registered; maintenance: an instance of it is in maintenance;
retiring: we are stopping it (ignored by the planner)."""
View = namedtuple("View", "boxes remote_passing")
Step = namedtuple("Step", "kind container name")
Plan = namedtuple("Plan", "kind reason steps")  # kind: 'roll' | 'done' | 'refuse'

RUNNING = ("running", "restarting")


def serving(box):
    return box.state in RUNNING and bool(box.passing) and not box.maintenance and not box.retiring


def counts(view, target):
    """(serving on the target image, serving on other images, serving elsewhere)."""
    new = sum(1 for b in view.boxes if serving(b) and b.image == target)
    old = sum(1 for b in view.boxes if serving(b) and b.image != target)
    return new, old, view.remote_passing


def plan(declared, view, target, resuming=False):
    """The remaining steps to roll `view` to image `target` with `declared` always serving."""
    declared = int(declared)
    live = [b for b in view.boxes if not b.retiring]
    new_n, old_n, remote = counts(view, target)
    cap = new_n + old_n + remote
    if not resuming and cap < declared:
        return Plan("refuse", "%d/%d passing before any change: heal the service first" % (cap, declared), ())
    steps = [Step("remove", b.id, b.name) for b in live if b.state not in RUNNING]
    running = [b for b in live if b.state in RUNNING]
    for b in running:
        if b.image == target and not serving(b) and not b.maintenance:
            steps.append(Step("wait", b.id, b.name))  # started by an earlier run: it may still pass
            cap += 1
    # retire first what does not serve (maintenance, failing), then the serving ones, oldest name first
    old = [b for b in running if b.image != target]
    old.sort(key=lambda b: (serving(b), b.name, b.id))
    for b in old:
        if serving(b):
            while cap - 1 < declared:
                steps.append(Step("start", None, None))
                cap += 1
            cap -= 1
        steps.append(Step("retire", b.id, b.name))
    while cap < declared:
        steps.append(Step("start", None, None))
        cap += 1
    if not steps:
        return Plan("done", "%d serving on the target image, none on another" % new_n, ())
    replaced = sum(1 for b in old if serving(b))
    return Plan("roll", "%d of %d to replace (%d on the target image)" % (replaced, replaced + new_n, new_n),
                tuple(steps))


def describe(step, image_name=None):
    """One line for humans: 'start one web of medic-demo:v2', 'retire web-1 (abc123def456)'."""
    who = "%s (%s)" % (step.name, (step.container or "")[:12]) if step.container else ""
    if step.kind == "start":
        return "start one new instance" + (" of %s" % image_name if image_name else "")
    if step.kind == "wait":
        return "wait until %s passes" % who
    if step.kind == "retire":
        return "retire %s: maintenance, out of the LB, graceful stop, remove" % who
    return "remove %s (not running)" % who

