"""medic-rollout's watch on the instances it started: one that passed and then died fails the
rollout (a rollback), at every step and, with --monitor SECONDS, for that long after the last
step. Swarm rolled on when such a death came after its monitor period (moby#37972)."""
from ..replace import rollout_plan


def died(view, started):
    """The first container this rollout started (`started`: IDs) that has exited or is restarting
    since, or None. Pure. A container still coming up is judged by its own step, not here."""
    for b in view.boxes:
        if b.id in started and (b.state == "restarting" or b.state not in rollout_plan.RUNNING + ("created",)):
            return b
    return None


def why(box):
    return "new instance %s %s since this rollout started it" % (
        box.id[:12], "has exited" if box.state == "exited" else "is " + str(box.state))


class Watch:
    """The executor's side: says and audits a death; watches for `seconds` after the last step, once."""

    def __init__(self, seconds, out, audit, clock, sleep, every=0.2):
        self.seconds, self.out, self.audit = float(seconds), out, audit
        self.clock, self.sleep, self.every = clock, sleep, every
        self.watched = False

    def died(self, view, started, image):
        """Why the rollout failed (one of its new instances died), or None."""
        box = died(view, started)
        if box is None:
            return None
        text = why(box)
        self.out.line("  " + text)
        self.audit("step", step="monitor", container=box.id, result="failed", reason=text, image=image, duration=0.0)
        return text

    def after_last_step(self, look, started):
        """Watch `look()` (-> View) for `seconds` or until one of `started` died. False when off or done."""
        if self.seconds <= 0 or self.watched:
            return False
        self.watched = True
        self.out.line("  monitoring the new instances for %.0f s" % self.seconds)
        end = self.clock() + self.seconds
        while self.clock() < end and died(look(), started) is None:
            self.sleep(self.every)
        return True
