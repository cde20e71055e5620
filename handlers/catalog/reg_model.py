"""Registration's vocabulary: options, the desired-service record, the Meta it owns. Pure.

Every module of medic-register (reg_*) builds on these names; nothing here does I/O.
Module map (docs/medic-register.md):
  reg_model      Options, Registration, Skip, Op, Diff, the medic_* Meta keys
  reg_checks     registrator's check labels -> a Consul check (targets confined to the container)
  reg_roles      role tags (medic-tag) merged with label tags; retag; RoleWatch (KV blocking query)
  reg_labels     registrator's conventions: one container's inspect data -> Registrations
  reg_diff       desired vs what the agent holds -> Ops; Docker events -> effects
  reg_agent      the local Consul agent (lighthttp), failures told apart (down vs refused)
  reg_registrar  Registrar: engine state, converge, audit, per-container retry
  reg_loop       EventPump, serve: the daemon loop
"""
import re
from collections import namedtuple

META_CONTAINER = "medic_container_id"
META_PROJECT = "medic_compose_project"
META_SERVICE = "medic_compose_service"
META_REGISTRAR = "medic_registrar"
META_STARTED = "medic_started"  # epoch seconds of the engine's State.StartedAt (heal counts it as pending)
MEDIC_META = (META_CONTAINER, META_PROJECT, META_SERVICE, META_REGISTRAR, META_STARTED)

# medic's own service (medic-config renders it: count checks, medic:reconcile) and Consul's:
# a container label can never register under these IDs or names.
RESERVED_IDS = ("medic", "consul")
RESERVED_ID_PREFIXES = ("medic:", "_nomad", "consul:")
RESERVED_NAMES = ("medic", "consul")

# Consul's own limits (1.8: 64 Meta pairs, keys <= 128, values <= 512) and ours for names and tags
MAX_META = 64
MAX_TAGS = 64
MAX_TAG_LEN = 255
MAX_ID_LEN = 256
MAX_PORTS = 128  # registrations per container: a container publishing a port range is refused, not registered
DEREGISTER_MODES = ("always", "on-success")

DEFAULT_INTERVAL = "10s"

_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class Options(namedtuple("Options", "hostname registrar_id ip fallback_ip force_tags internal explicit deregister "
                                   "http_checks")):
    """What shapes every registration. `ip` (--ip) beats the published HostIp; `fallback_ip`
    is used for ports published on a wildcard address (0.0.0.0 / ::) and for host-network
    containers. registrator's flags: `internal` (container address and exposed ports),
    `explicit` (only ports with a SERVICE_NAME), `deregister` ("always" | "on-success").
    `http_checks` (reg_checks.HTTP_MODES): how an HTTP check label becomes a check; medic-register
    chooses it from the agent's version."""
    __slots__ = ()

    def __new__(cls, hostname, registrar_id=None, ip=None, fallback_ip=None, force_tags=(), internal=False,
                explicit=False, deregister="always", http_checks="follow"):
        return super().__new__(cls, hostname, registrar_id or hostname, ip or None, fallback_ip or None,
                               tuple(force_tags), bool(internal), bool(explicit), deregister or "always",
                               http_checks or "follow")


class Registration(namedtuple("Registration", "id name address port tags meta check container_id")):
    """One desired agent service. `meta` and `check` are sorted tuples of (key, value)."""
    __slots__ = ()

    def body(self):
        """The JSON body of PUT /v1/agent/service/register."""
        b = {"ID": self.id, "Name": self.name, "Address": self.address, "Port": self.port,
             "Tags": list(self.tags), "Meta": dict(self.meta)}
        if self.check:
            b["Check"] = dict(self.check)
        return b

    @property
    def check_type(self):
        return check_type(dict(self.check)) if self.check else None


# a deliberate non-action; action "ignore" (left out) or "refuse" (hostile or invalid input)
Skip = namedtuple("Skip", "container what reason action", defaults=("ignore",))
Op = namedtuple("Op", "action service_id registration reason")  # "register" | "deregister"
Diff = namedtuple("Diff", "ops unchanged refused", defaults=((),))  # refused: [Skip] (IDs not ours)


def split_tags(raw):
    """'a, b,,a' -> ('a', 'b'): comma-separated, trimmed, empty and repeated ones dropped.
    A backslash-escaped comma stays in its tag, as registrator's: 'a\\,b,c' -> ('a,b', 'c')."""
    out = []
    for t in re.split(r"(?<!\\),", str(raw or "")):
        t = t.replace("\\,", ",").strip()
        if t and t not in out:
            out.append(t)
    return tuple(out)


def tag_problem(tag):
    """Why one tag is refused (not printable, longer than MAX_TAG_LEN), or None. Pure."""
    if len(tag) > MAX_TAG_LEN or not tag.isprintable():
        shown = "".join(ch if ch.isprintable() else "?" for ch in tag[:80]) + ("..." if len(tag) > 80 else "")
        return "tag %r: printable, at most %d characters" % (shown, MAX_TAG_LEN)
    return None


def check_type(check):
    """'http' | 'tcp' | 'grpc' | 'ttl' for a registration check dict (Consul's agent Type names)."""
    if check.get("HTTP"):
        return "http"
    if check.get("TCP"):
        return "tcp"
    if check.get("GRPC"):
        return "grpc"
    if check.get("TTL"):
        return "ttl"
    return None
