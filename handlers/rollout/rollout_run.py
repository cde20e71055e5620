"""medic-rollout's parts, built and joined: spec, Consul, engine, lock, pause, executor.

    run(service, image=..., ...) -> Outcome

Takes the service lock (`lock.held(..., "rollout")`) for the whole rollout, so medic-heal
holds ("rollout in progress") and no second rollout, drain or failover runs. `--dry-run`
takes no lock and changes nothing.
"""
import os
import threading
import time

from ..core import audit as audit_mod
from ..core import runtime
from ..core.errors import EngineError, UsageError
from ..core.status import Outcome, Status
from ..core.progress import Progress

ENGINE_TIMEOUT = 60.0


def run(service, image=None, abort=False, deadline=None, lb_output=None, lb_timeout=30.0, stop_timeout=None,
        dry_run=False, audit_log=None, specs=None, env=None, conn=None, environ=None, stream=None,
        engine_factory=None):
    from ..engine import engine as engine_mod
    from ..consul import lighthttp
    from ..service import pause, rollout_image
    from . import rollout_exec, rollout_state
    from ..replace import rollout_io, rollout_lock
    from ..consul import settings
    from ..spec import spec as spec_mod

    environ = os.environ if environ is None else environ
    conn = conn or {}
    if bool(image) == bool(abort):
        raise UsageError("give exactly one of --image IMAGE and --abort")
    if image:
        rollout_image.check_ref(image)
        image = rollout_image.with_tag(image)
    if deadline is not None and not deadline > 0:
        raise UsageError("--deadline must be > 0 seconds")
    env = settings.environment(env, environ)
    specs_dir = spec_mod.specs_dir(specs, environ)
    loaded = spec_mod.load_dir(specs_dir, env)
    if service not in loaded:
        raise UsageError("no spec in %s declares service %r" % (specs_dir, service[:130]))
    sp = loaded[service]
    st = settings.resolve(conn.get("consul_addr"), conn.get("token"), conn.get("token_file"), conn.get("timeout"),
                          spec_addr=sp.consul_addr, environ=environ)
    log = audit_mod.AuditLog(audit_mod.audit_path(audit_log, environ),
                             secrets=[st.token or "", environ.get("CONSUL_HTTP_TOKEN", "")])
    client = settings.make_client(st)
    # the docker SDK: a rollout needs the image API the light client (handlers/engine.py) leaves out
    engine = (engine_factory or (lambda: engine_mod.connect(timeout=ENGINE_TIMEOUT, sdk=True)))()

    def audit(rec):
        try:
            log.write(dict(rec, env=env))
        except OSError:
            pass

    def alert(reason, live):
        from ..core import alerts
        alerts.emit({"kind": "critical", "service": service, "env": env, "live": live, "desired": sp.instances,
                     "action": "rollout", "reason": reason}, audit=log, specs=os.path.dirname(sp.path) or None,
                    env=env, settings=st)

    def paused():
        p = pause.read(client, env, service, time.time())
        return pause.describe(p) if p else None

    def record(ref):
        return rollout_image.record_image(client, env, service, ref)

    with lighthttp.Connection(st) as hconn:
        out = Progress(stream) if stream is not None else Progress(open(os.devnull, "w"))
        wait = deadline if deadline is not None else sp.heal.grace
        if sp.scale.driver == "swarm":
            from . import rollout_swarm
            ex = rollout_swarm.SwarmRoll(engine, sp.scale.service, out, audit=audit, alert=alert, paused=paused,
                                         record=record, deadline=wait)
        else:
            driver = rollout_io.ComposeDriver(sp, engine, hconn)
            if not dry_run:  # find the compose command (`docker compose version`) while Consul and the engine are read
                threading.Thread(target=_warm, args=(driver,), daemon=True).start()
            ex = rollout_exec.Executor(driver, rollout_state.Store(client, env, service), sp.instances, service, out,
                                       audit=audit, alert=alert, paused=paused, record=record,
                                       lb=rollout_io.LbFile(lb_output) if lb_output else None, deadline=wait,
                                       stop_timeout=stop_timeout, lb_timeout=lb_timeout)
        try:
            if dry_run:
                return ex.run(image, abort=abort, dry_run=True)
            with rollout_lock.held(client, env, service, "rollout", settings.make_client(st)) as got:
                if not got:
                    why = rollout_lock.holder_text(client, env, service)
                    audit({"kind": "rollout", "what": "end", "service": service, "decision": "refuse",
                           "result": "warning", "reason": why})
                    return Outcome(Status.WARNING, runtime.status_line(Status.WARNING, "%s: refused: %s"
                                                                       % (service, why)))
                return ex.run(image, abort=abort)
        finally:
            try:
                engine.close()
            except engine_mod.failures():
                pass



def _warm(driver):
    try:
        driver.base
    except EngineError:
        pass  # the first compose run asks again and reports it
