"""Docker Swarm mode's own time to heal, on this engine, for the bench's comparison row.

Swarm heals the same demo image: a service of 3 replicas with a container-local
health check (`wget http://127.0.0.1/cgi-bin/health` inside the container, 1 s
interval: the same cadence as the demo's Consul HTTP check). One trial: `docker
kill` one task's container, then time until a NEW container of the service is
`healthy` (Swarm's notion of a passing replacement). Default restart policy
(condition any, CLI default delay 5 s) as a Swarm user gets it, or tuned with
`restart_delay="0s"` (`--restart-delay 0s`, what a Swarm user who cares sets).

`measure_restart_policy_time_to_heal` is the plain-engine reference: one container
with `--restart always` and the same health check (`--network none`: the check is
container-local), its main process SIGKILLed from
the host (a crash: `docker kill` counts as a manual stop and is never restarted),
then time until the same container is `healthy` again. Trials are 10.5 s apart: the
engine doubles its restart delay (100 ms, 200 ms, ...) for a container that keeps
dying within 10 s of its start, so each trial is a first crash.

The engine is left as found: the swarm is left only if this module joined it,
and the service is removed either way.
"""
import subprocess
import time
import uuid


def _docker(*args, check=True, timeout=60):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _swarm_state():
    return _docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def _containers(service):
    out = _docker("ps", "-a", "--filter", "label=com.docker.swarm.service.name=" + service,
                  "--format", "{{.ID}} {{.Status}}").stdout
    return [line.split(" ", 1) for line in out.splitlines() if line.strip()]


def _healthy(service):
    return {cid for cid, status in _containers(service) if "(healthy)" in status and status.startswith("Up")}


HEALTH = ["--health-cmd", "wget -q -O /dev/null http://127.0.0.1/cgi-bin/health",
          "--health-interval", "1s", "--health-timeout", "1s", "--health-retries", "1",
          "--health-start-period", "0s"]


def measure_swarm_time_to_heal(image="medic-demo:latest", trials=10, replicas=3, timeout=60.0, restart_delay=None):
    """-> list of seconds from `docker kill` to a new healthy task, one per trial."""
    joined = False
    if _swarm_state() != "active":
        _docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
        joined = True
    name = "medic-bench-swarm-" + uuid.uuid4().hex[:6]
    samples = []
    try:
        delay = ["--restart-delay", restart_delay] if restart_delay is not None else []
        _docker("service", "create", "-d", "--name", name, "--replicas", str(replicas), *delay, *HEALTH, image)
        _wait(lambda: len(_healthy(name)) == replicas, timeout, "swarm service healthy")
        for _ in range(trials):
            before = _healthy(name)
            victim = sorted(before)[0]
            t0 = time.monotonic()
            _docker("kill", victim)
            _wait(lambda: len(_healthy(name) - before) >= 1, timeout, "a replacement task healthy")
            samples.append(time.monotonic() - t0)
            _wait(lambda: len(_healthy(name)) == replicas, timeout, "back to %d healthy" % replicas)
    finally:
        _docker("service", "rm", name, check=False)
        if joined:
            _docker("swarm", "leave", "--force", check=False)
    return samples


def _state(name):
    out = _docker("inspect", name, "--format",
                  "{{.State.Status}} {{.State.Pid}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}"
                  "{{end}}").stdout.split()
    return out[0], int(out[1]), int(out[2]), (out[3] if len(out) > 3 else "")


RESET_AFTER = 10.5  # seconds a container must run before the engine resets its restart backoff


def measure_restart_policy_time_to_heal(image="medic-demo:latest", trials=10, timeout=60.0):
    """-> seconds from SIGKILL of the container's main process to the same container healthy again."""
    import os
    import signal

    name = "medic-bench-rp-" + uuid.uuid4().hex[:6]
    samples = []
    try:
        _docker("run", "-d", "--name", name, "--network", "none", "--restart", "always", *HEALTH, image)
        _wait(lambda: _state(name)[3] == "healthy", timeout, "restart-policy container healthy")
        for _ in range(trials):
            _, pid, restarts, _ = _state(name)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: _state(name)[2] > restarts and _state(name)[3] == "healthy", timeout,
                  "the restarted container healthy")
            samples.append(time.monotonic() - t0)
            # the engine doubles its restart delay (from 100 ms) while a container keeps dying
            # within 10 s of its start; each trial is a first crash, as medic's trials are
            time.sleep(RESET_AFTER)
    finally:
        _docker("rm", "-f", name, check=False)
    return samples


def leftovers():
    """Swarm services and restart-policy containers of this module still on the engine (should be none)."""
    out = _docker("ps", "-a", "--filter", "name=medic-bench-rp-", "--format", "{{.Names}}").stdout.split()
    if _swarm_state() == "active":
        out += _docker("service", "ls", "--filter", "name=medic-bench-swarm-", "--format", "{{.Name}}").stdout.split()
    return out


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("swarm bench: timed out waiting for " + what)


if __name__ == "__main__":
    print(["%.2f" % s for s in measure_swarm_time_to_heal(trials=3)])
    print(["%.2f" % s for s in measure_swarm_time_to_heal(trials=3, restart_delay="0s")])
    print(["%.2f" % s for s in measure_restart_policy_time_to_heal(trials=3)])
