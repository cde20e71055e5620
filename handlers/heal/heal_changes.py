"""A `medic-heal --changes` run: the cluster-wide checks payload -> the services that changed
and concern this node (handlers/heal/heal_seen.py decides, purely; this reads and writes its state).

    Changes(run, checks, audit_path)   .all_ (nothing known: triage every spec), .names,
                                       .summary(), .save(forget)
"""
from . import heal_seen
from ..consul.consul_errors import failures as consul_failures


class Changes:
    def __init__(self, run, checks, audit_path):
        self.run = run
        self.dir = heal_seen.state_dir(audit_path, run.environ)
        prev = heal_seen.load(self.dir, run.env)
        node = (prev or {}).get("node") or self._node()
        self.state = heal_seen.summarise(checks, node)
        names, self.why = heal_seen.changed(prev, self.state)
        self.all_ = names is None
        self.names = tuple(names or ())
        self.checks = len(checks)

    def _node(self):
        """This agent's node name (one request, then kept in the state), None when it cannot be read."""
        from . import heal_context
        try:
            return self.run.consul(self.run.settings(heal_context.NO_ADDR)).node_name()
        except consul_failures() + (ValueError, KeyError, TypeError):
            return None

    def summary(self):
        return "checks payload (%d checks): no change concerns node %s" % (self.checks, self.state.get("node"))

    def save(self, forget):
        heal_seen.save(self.dir, self.run.env, self.state, forget)
