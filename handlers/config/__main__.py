"""`medic-config`: render the Consul agent fragments (consul.d) from the specs.

    medic-config [--specs DIR] [--env E] [--out DIR] [--bin-dir DIR] [--audit-log P]
                 [--mode auto|script|batch] [--reconcile-interval 30s] [--consul-addr A] [--check]

Fragments (all owned by medic, all named `medic-*.json`):

  medic-agent.json     {"enable_local_script_checks": true}   (never enable_script_checks)
  medic-service.json   service `medic` (ID `medic`) carrying medic's own checks:
                         medic:<service>   the count check per spec: a script check (`<bin>/medic-check
                                           SERVICE --specs DIR ...`) or a TTL check (batch mode)
                         medic:batch       batch mode only: one script check running
                                           `<bin>/medic-check --all --ttl --refresh ...`
                         medic:reconcile   `<bin>/medic-heal --all --specs DIR ...` every 30 s
  medic-watches.json   3 watches for any number of specs: every check -> medic-heal --changes, a
                       keyprefix on medic/<env>/wake/ -> medic-heal, service=medic -> medic-notify

Never a node-level check (a critical node check would take every instance on the monitoring
node out of service), never a token (the agent's environment provides CONSUL_HTTP_TOKEN_FILE).
Output is deterministic (sorted keys, sorted lists), each file is written atomically and only
when its content changed, stale `medic-*` fragments are removed, every other file in the
directory is left alone. When the `consul` binary is present the fragments are checked with
`consul validate` (in a temp copy, with a throwaway bind_addr/data_dir fragment, since `consul
validate` refuses a directory without bind_addr on a host with several private addresses).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

from ..core import options, runtime
from ..consul import settings
from ..spec import spec
from ..core.errors import MedicError, SpecError, UsageError
from ..core.status import Outcome, Status
from ..core import durations, keys

DEFAULT_OUT = "consul.d"
PREFIX = "medic-"
SERVICE_ID = "medic"
RESERVED = ("batch", "reconcile")  # check ids medic:batch, medic:reconcile
REFRESH_FACTOR = 2    # batch mode: an unchanged TTL check is rewritten every 2 intervals ...
REFRESH_MIN = 300.0   # ... or 5 minutes, whichever is longer (each rewrite is a request to the agent)
TTL_FACTOR = 2        # ... and the TTL is twice that: two missed rewrites turn it critical
DEFAULT_RECONCILE_INTERVAL = 30.0
RECONCILE_SLACK = 30.0  # reconcile timeout = the largest heal.command_timeout + this
SCRIPT_LIMIT = 20      # --mode auto: more specs than this -> every count check in batch mode

Plan = namedtuple("Plan", "bin_dir specs_dir env audit_log consul_addr consul_timeout mode "
                          "reconcile_interval")


# -- rendering (pure) -------------------------------------------------------
def _common_args(plan, audit=True):
    args = ["--specs", plan.specs_dir]
    if plan.env:
        args += ["--env", plan.env]
    if audit and plan.audit_log:
        args += ["--audit-log", plan.audit_log]
    if plan.consul_addr:
        args += ["--consul-addr", plan.consul_addr]
    if plan.consul_timeout is not None:
        args += ["--consul-timeout", "%g" % plan.consul_timeout]
    return args


def _exe(plan, name):
    return os.path.join(plan.bin_dir, name)


def _flap(check, policy):
    if policy.success_before_passing > 0:
        check["success_before_passing"] = policy.success_before_passing
    if policy.failures_before_critical > 0:
        check["failures_before_critical"] = policy.failures_before_critical
    return check


def mode_of(s, plan):
    return s.check.mode if plan.mode == "auto" else plan.mode


def effective(plan, specs):
    return plan._replace(mode="batch") if plan.mode == "auto" and len(specs) > SCRIPT_LIMIT else plan


def count_checks(specs, plan):
    """The medic:<service> checks, plus medic:batch when any spec is in batch mode."""
    fmt = durations.format_duration
    checks, batch = [], [s for s in specs.values() if mode_of(s, plan) == "batch"]
    interval = min((s.check.interval for s in batch), default=None)
    refresh = max(interval * REFRESH_FACTOR, REFRESH_MIN) if batch else None
    for name, s in sorted(specs.items()):
        c = {"id": "medic:" + name, "name": "medic count " + name,
             "notes": "live instances of %s against its spec (%d); exit 1 more, 2 fewer, 3 unknown"
                      % (name, s.instances)}
        if mode_of(s, plan) == "batch":
            c["ttl"] = fmt(refresh * TTL_FACTOR)
        else:
            c.update({"args": [_exe(plan, "medic-check"), name] + _common_args(plan, audit=False),
                      "interval": fmt(s.check.interval), "timeout": fmt(s.check.timeout)})
            _flap(c, s.check)
        checks.append(c)
    if batch:
        timeout = max(max(s.check.timeout for s in batch), interval)
        checks.append({
            "id": "medic:batch", "name": "medic batch count",
            "notes": "evaluates every spec and sets the TTL checks medic:<service>; its state is the worst",
            "args": [_exe(plan, "medic-check"), "--all", "--ttl", "--refresh", "%g" % refresh]
                    + _common_args(plan, audit=False),
            "interval": fmt(interval), "timeout": fmt(timeout)})
    return checks


def reconcile_check(specs, plan):
    timeout = max((s.heal.command_timeout for s in specs.values()), default=spec.HEAL_DEFAULTS["command_timeout"])
    return {"id": "medic:reconcile", "name": "medic reconcile",
            "notes": "medic-heal --all: heals any shortfall no watch reported; its state is the worst service",
            "args": [_exe(plan, "medic-heal"), "--all"] + _common_args(plan),
            "interval": durations.format_duration(plan.reconcile_interval),
            "timeout": durations.format_duration(timeout + RECONCILE_SLACK)}


def watches(specs, plan):
    heal = [_exe(plan, "medic-heal")] + _common_args(plan)
    # every check, any state: medic-heal --changes looks only at what changed (docs/scale.md)
    out = [{"type": "checks", "stale": True, "args": heal[:1] + ["--changes"] + heal[1:]},
           {"type": "checks", "service": SERVICE_ID,
            "args": [_exe(plan, "medic-notify"), "watch"] + _common_args(plan)}]
    # medic-register's wake-up keys (a container it had deregistered finally exited): wake medic-heal
    out.append({"type": "keyprefix", "prefix": keys.wake_prefix(plan.env), "stale": True, "args": heal})
    return out


def render(specs, plan):
    """{service: Spec} + Plan -> {file name: JSON-able document}. Pure and deterministic."""
    for name, s in specs.items():
        if name.lower() in RESERVED:
            raise SpecError("%s: $.service: %r is reserved (medic's own check medic:%s)" % (s.path, name, name))
    checks = count_checks(specs, effective(plan, specs)) + [reconcile_check(specs, plan)]
    checks.sort(key=lambda c: c["id"])
    return {
        "medic-agent.json": {"enable_local_script_checks": True},
        "medic-service.json": {"service": {"id": SERVICE_ID, "name": SERVICE_ID, "tags": ["consul-medic"],
                                           "checks": checks}},
        "medic-watches.json": {"watches": watches(specs, plan)},
    }


def dumps(doc):
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# -- doing -------------------------------------------------------------------
def find_bin_dir(explicit=None, argv0=None):
    """Absolute directory holding medic-check: --bin-dir, else the running medic-config's."""
    if explicit:
        d = os.path.abspath(explicit)
        if not os.path.isfile(os.path.join(d, "medic-check")):
            raise UsageError("--bin-dir %s: no medic-check there" % d)
        return d
    for d in (os.path.dirname(os.path.abspath(argv0 or sys.argv[0] or "")), os.path.dirname(sys.executable)):
        if os.path.isfile(os.path.join(d, "medic-check")):
            return os.path.abspath(d)
    raise UsageError("cannot find medic-check next to medic-config: give --bin-dir")


def validate(files, consul="consul", timeout=60):
    """Run `consul validate` on the fragments in a temp dir; None when consul is absent."""
    exe = shutil.which(consul)
    if not exe:
        return None
    with tempfile.TemporaryDirectory(prefix="medic-validate-") as tmp:
        conf = os.path.join(tmp, "conf")
        os.makedirs(conf)
        for name, text in files.items():
            with open(os.path.join(conf, name), "w", encoding="utf-8") as f:
                f.write(text)
        with open(os.path.join(conf, "00-validate-bind.json"), "w", encoding="utf-8") as f:
            json.dump({"bind_addr": "127.0.0.1", "data_dir": os.path.join(tmp, "data")}, f)
        try:
            r = subprocess.run([exe, "validate", conf], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MedicError("consul validate did not finish within %d s" % timeout) from None
        if r.returncode != 0:
            lines = [ln.strip() for ln in (r.stderr + "\n" + r.stdout).splitlines() if ln.strip()]
            raise MedicError("consul validate rejected the fragments: %s" % ("; ".join(lines[-3:]) or "exit %d" % r.returncode))
    return True


def owned(name):
    return name.startswith(PREFIX) and name.endswith((".json", ".hcl"))


def write_dir(out, files):
    """Write `files` atomically into `out`; remove stale medic-* fragments. -> (written, unchanged, removed)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise MedicError("%s: cannot create: %s" % (out, e.strerror)) from None
    written, unchanged, removed = [], [], []
    for name, text in sorted(files.items()):
        path = os.path.join(out, name)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    unchanged.append(name)
                    continue
        except (OSError, UnicodeDecodeError):
            pass
        fd, tmp = tempfile.mkstemp(prefix=".%s." % name, suffix=".tmp", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise MedicError("%s: cannot write: %s" % (path, e.strerror)) from None
        written.append(name)
    for name in sorted(os.listdir(out)):
        if owned(name) and name not in files and os.path.isfile(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))
            removed.append(name)
    return written, unchanged, removed


def parse_interval(raw, what):
    try:
        value = spec.parse_duration(raw if not raw.replace(".", "", 1).isdigit() else float(raw))
    except (ValueError, AttributeError):
        raise UsageError("%s %r: use a duration such as 30s or 1m" % (what, raw)) from None
    if value <= 0:
        raise UsageError("%s must be > 0" % what)
    return value


def run(opts, argv0=None):
    env = settings.environment(opts.get("env"))
    specs_dir = os.path.abspath(spec.specs_dir(opts.get("specs")))
    specs = spec.load_dir(specs_dir, env)
    if opts.get("acl_policy"):  # site: least-privilege ACL rules per role (handlers/consul/acl.py)
        from ..consul import acl
        return acl.policy_outcome(opts["acl_policy"], specs, env)
    from ..engine import compose_file  # site: a compose service must name an image, not build: one
    unchecked = ["compose files not checked for build: (no docker CLI)"] if compose_file.check(specs) is None else []
    if opts.get("check"):
        lines = ["%s: %d instances, %s mode (%s)" % (n, s.instances, s.check.mode, s.path) for n, s in specs.items()]
        lines += unchecked
        return Outcome(Status.OK, runtime.status_line(Status.OK, "%d specs valid in %s" % (len(specs), specs_dir))
                       + "".join("\n" + ln for ln in lines))
    if opts.get("consul_addr"):
        settings.parse_addr(opts["consul_addr"])  # a typo fails here, not in every check
    plan = Plan(find_bin_dir(opts.get("bin_dir"), argv0), specs_dir, env,
                os.path.abspath(opts["audit_log"]) if opts.get("audit_log") else None,
                opts.get("consul_addr"), opts.get("consul_timeout"), opts.get("mode") or "auto",
                parse_interval(opts.get("reconcile_interval") or str(DEFAULT_RECONCILE_INTERVAL), "--reconcile-interval"))
    files = {name: dumps(doc) for name, doc in render(specs, plan).items()}
    validated = validate(files)
    out = os.path.abspath(opts.get("out") or DEFAULT_OUT)
    written, unchanged, removed = write_dir(out, files)
    batch = sum(1 for s in specs.values() if mode_of(s, effective(plan, specs)) == "batch")
    text = "%s: %d fragments for %d services (%d script, %d batch): %d written, %d unchanged, %d removed; %s" % (
        out, len(files), len(specs), len(specs) - batch, batch, len(written), len(unchanged), len(removed),
        "consul validate passed" if validated else "not validated (no consul binary)")
    lines = ["written: " + n for n in written] + ["removed: " + n for n in removed] + unchecked
    if written or removed:
        lines.append("apply with: consul reload")
    return Outcome(Status.OK, runtime.status_line(Status.OK, text) + "".join("\n" + ln for ln in lines))


def command():
    import click

    @click.command(help="Render the Consul agent fragments (count checks, reconcile check, watches) "
                        "from the specs into a consul.d directory.")
    @click.option("--out", "out", metavar="DIR", help="Output directory [default: ./consul.d].")
    @click.option("--bin-dir", "bin_dir", metavar="DIR",
                  help="Where medic-* live [default: the directory of this medic-config].")
    @click.option("--audit-log", "audit_log", metavar="PATH", help="Audit log passed to medic-heal.")
    @click.option("--mode", "mode", type=click.Choice(["auto", "script", "batch"]), default="auto",
                  show_default=True, help="Count checks: per spec check.mode (auto), or all script, or all batch.")
    @click.option("--reconcile-interval", "reconcile_interval", metavar="DURATION", default="30s",
                  show_default=True, help="How often medic-heal --all runs.")
    @click.option("--check", "check", is_flag=True, help="Validate the specs only; write nothing.")
    @click.option("--acl-policy", "acl_policy", metavar="ROLE[@NODE]",
                  help="Print the least-privilege Consul ACL rules (HCL) for monitor, registrar or reader "
                       "[NODE: default this host's name]; write nothing.")
    @options.common
    def cmd(**opts):
        return run(opts)

    return cmd


def main():
    return runtime.run(command=command, prog="medic-config", deadline=120.0)


if __name__ == "__main__":
    main()
