"""What medic-heal's decision works on and returns: the values of decide(spec, observation,
history, now) -> Decision. Plain named tuples, no behaviour; decide.py explains the arithmetic.
"""
from collections import namedtuple

KINDS = ("noop", "hold", "heal", "warn")
RUNNING = ("running", "restarting")
STOPPED = ("exited", "dead")
KNOWN_STATES = ("running", "restarting", "paused", "created", "exited", "dead", "removing")

Container = namedtuple("Container", "id name state created started passing killed")
Container.__new__.__defaults__ = (False,)
Container.__doc__ = """One engine container (or Swarm task) of the service.

state: Docker State.Status; created/started: epoch seconds (0 = never);
passing: True (a Consul instance of it passes), False (registered, not passing),
None (no Consul instance of it); killed: it exited from a signal sent from outside
(exit 137/143, not OOM-killed): a loss, not a crash."""

Remote = namedtuple("Remote", "id node passing started down")
Remote.__new__.__defaults__ = (0.0, False)
Remote.__doc__ = """A Consul instance that maps to no container of this engine; started: the
container's start time from Meta medic_started (epoch seconds, 0 = unknown); down: its node
is lost (serfHealth failing) or in maintenance, or the instance is in maintenance: it cannot
come to pass by itself, so it is neither pending nor watched."""

Observation = namedtuple("Observation", "containers remote stale unknown")
Observation.__doc__ = """Fresh state of one service: containers (tuple of Container), remote
(tuple of Remote), stale (Consul instances whose local container is not running),
unknown (tuple of reasons the state cannot be trusted; any makes decide hold)."""

Action = namedtuple("Action", "time kind target result index")
Action.__doc__ = """One past action: kind 'scale' | 'replace'; result 'started' (command ok,
not yet verified) | 'restored' | 'failed'."""

History = namedtuple("History", "actions epoch circuit suspects")
History.__new__.__defaults__ = ((),)
History.__doc__ = """What medic remembers of a service: actions (oldest first), epoch (failures
before it are forgotten: --reset, or a circuit that closed), circuit (time it opened or None),
suspects ((container id, first seen failing), ...): a container is replaced only once it has
been seen failing for a whole grace period, so a healthy container whose instance is briefly
missing or critical (agent restart: checks start critical; a -dev agent's reload drops
API-registered services; a registrar re-registering) is never replaced."""
EMPTY_HISTORY = History((), 0.0, None, ())

Counts = namedtuple("Counts", "declared passing local_passing remote_passing pending failing stopped dying has target "
                             "remote_pending remote_watched")
Counts.__new__.__defaults__ = (0, 0)

Decision = namedtuple("Decision", "kind target reason counts remove replace settle circuit suspects until suspended")
Decision.__new__.__defaults__ = (None, None, (), None, None, None, (), None, False)
Decision.__doc__ = """kind: noop|hold|heal|warn; target: scale target (heal) or None; reason: text;
counts: Counts; remove: ids of stopped containers to remove before scaling;
replace: id of the failing container to replace (heal only); settle: 'restored' |
'failed' | None, the verdict on the last action; circuit: 'open' | 'close' | None, a
transition to record (and alert on); suspects: the failing containers with the time each was
first seen failing (to remember); until: when this hold ends by itself (epoch seconds), None
when nothing but a change can end it; suspended: healing is suspended (open circuit) while the
count is short: someone must look (exit 1)."""
