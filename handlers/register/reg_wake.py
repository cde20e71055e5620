"""medic-register's wake-ups: the key that makes medic-heal look, and the fallback when Consul can't carry it.

A container that exits after its stop signal changes nothing in Consul (it was deregistered at
the signal), so the registrar writes `medic/<env>/wake/<service>` = {"at", "why", "container"}
and the agent's keyprefix watch (rendered by medic-config) runs medic-heal. `Wakes` queues them
and writes them in order; a write Consul refuses (4xx) is audited and dropped, a failed one
(Consul down, no leader) stays queued and the registrar's loop retries it with backoff.

The fallback (`medic-register --heal-fallback`, for a Docker host whose agent runs medic-heal,
docs/topology.md): while the cluster has no reachable leader the key cannot be written, and the
agent's watches are failing too -- Consul's watch plan retries an erring watch only after 5 s
(then 20 s, 45 s, ...). So for every wake-up that could not be written the registrar starts the
local medic-heal at once, once per wake-up, with the record as a keyprefix payload on stdin
(ModifyIndex 0: it consumes no key). That run waits for the election (handlers/heal_context,
at most 15 s) and heals as any run does: lock, fresh observation, decide. The key itself is
still written once Consul takes writes again.
"""
import base64
import json
import os
import subprocess

from ..core import keys, runtime
from ..core.errors import ConsulError
from .reg_agent import Refused

FALLBACK_DEADLINE = 60  # seconds: MEDIC_DEADLINE of a fallback run (the election wait included)


class Wakes:
    def __init__(self, agent, record, wall, fallback=None):
        self.agent, self.record, self.wall, self.fallback = agent, record, wall, fallback
        self.queue = []           # [service name, container id, why, record]
        self.fell_back = set()    # (service, container id) handed to the fallback already
        self.written = 0

    def add(self, name, cid, why):
        self.queue.append([name, cid, why, {"at": int(self.wall()), "why": why, "container": cid}])

    def flush(self):
        """Write what is queued; raises ConsulError (the rest stays queued) after the fallback ran."""
        while self.queue:
            name, cid, why, rec = self.queue[0]
            try:
                key = self.agent.put_wake(name, rec)
            except (Refused, ValueError) as e:
                self.record({"action": "wake", "service": name, "container": cid,
                             "reason": "wake-up key not written: %s" % e})
            except ConsulError as e:
                self._fall_back(e)
                raise
            else:
                self.written += 1
                self.fell_back.discard((name, cid))
                self.record({"action": "wake", "service": name, "container": cid, "key": key, "reason": why})
            self.queue.pop(0)

    def _fall_back(self, err):
        if self.fallback is None:
            return
        for name, cid, why, rec in self.queue:
            if (name, cid) in self.fell_back:
                continue
            self.fell_back.add((name, cid))
            try:
                what = "medic-heal started directly (pid %d)" % self.fallback(name, rec)
            except (OSError, ValueError, TypeError, subprocess.SubprocessError) as e:  # Popen's: never stops the registrar
                what = "medic-heal could not be started: %s: %s" % (type(e).__name__, e)
            self.record({"action": "wake", "service": name, "container": cid, "fallback": True,
                         "reason": "wake-up key not written (%s; the agent's watches wait 5 s after an error): "
                                   "%s" % (str(err).splitlines()[0][:200], what)})


def payload(key, record):
    """The keyprefix payload the wake-up watch would have delivered for `record` (ModifyIndex 0)."""
    value = base64.b64encode(json.dumps(record, sort_keys=True).encode()).decode()
    return json.dumps([{"Key": key, "CreateIndex": 0, "ModifyIndex": 0, "LockIndex": 0, "Flags": 0,
                        "Value": value, "Session": ""}]).encode()


class HealSpawner:
    """Starts `medic-heal` (beside this executable) detached, the payload on its stdin; reaps them.

    Its token is the heal role's (`token_file`), never the registrar's: CONSUL_HTTP_TOKEN and
    CONSUL_HTTP_TOKEN_FILE of the registrar's environment are not passed on."""

    def __init__(self, argv0, env_name, specs=None, consul_addr=None, token_file=None, audit_log=None, environ=None):
        self.argv = [runtime.sibling(argv0, "medic-heal")]
        for flag, value in (("--env", env_name), ("--specs", specs), ("--consul-addr", consul_addr), ("--token-file", token_file),
                            ("--audit-log", audit_log)):
            if value:
                self.argv += [flag, value]
        self.env = {k: v for k, v in (os.environ if environ is None else environ).items()
                    if k not in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_INDEX")}
        self.env["MEDIC_DEADLINE"] = str(FALLBACK_DEADLINE)
        self.env_name, self.children = env_name, []

    def __call__(self, service, record):
        self.children = [p for p in self.children if p.poll() is None]  # reap the finished
        p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=self.env, start_new_session=True, close_fds=True)
        try:
            p.stdin.write(payload(keys.key(self.env_name, "wake", service), record))
            p.stdin.close()
        except OSError:
            pass
        self.children.append(p)
        return p.pid
