"""Test support for medic-rollout / medic-drain: demo-image variants, a compose service
registered by the real medic-register, and a world that cleans up after itself.

Variants of the demo image are made without a registry or a build: a container of
medic-demo:latest is created (never started), a file is put into it, and it is committed
under a new tag:
    page  /www/index.html says "<text>"                 (a new release that works)
    sick  /tmp/unhealthy exists: /cgi-bin/health fails  (a release that never passes)
    slow  DEMO_START_DELAY=N: serves N seconds after it starts (a slow starter)
    crash DEMO_CRASH=1: exits at once (a release that crashes)
"""
import io
import json
import os
import tarfile

import support
import support_heal as sh
import support_register as sr


def _tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_variant(client, tag, page=None, sick=False, start_delay=None, crash=False, base=support.DEMO_IMAGE):
    """Commit a variant of the demo image as `tag` (e.g. medic-demo:roll1234-v2); returns tag."""
    files = {}
    if page is not None:
        files["www/index.html"] = ("<html><body>%s</body></html>\n" % page).encode()
    if sick:
        files["tmp/unhealthy"] = b"sick\n"
    c = client.containers.create(base)
    try:
        c.put_archive("/", _tar(files))
        repo, _, t = tag.rpartition(":")
        changes = (["ENV DEMO_START_DELAY=%d" % start_delay] if start_delay else []) + (
            ["ENV DEMO_CRASH=1"] if crash else [])
        c.commit(repository=repo, tag=t, changes=changes or None)
    finally:
        c.remove(force=True)
    return tag


def remove_images(client, tags):
    for t in tags:
        try:
            client.images.remove(t, force=True)
        except Exception:
            pass


def write_compose(path, service, token, image=support.DEMO_IMAGE):
    """A compose file (JSON is YAML) of one `web` service registered as `service`."""
    doc = {"services": {"web": {
        "image": image, "ports": ["127.0.0.1::80"],
        "labels": {"SERVICE_NAME": service, "SERVICE_TAGS": "roll", "SERVICE_CHECK_HTTP": "/cgi-bin/health",
                   "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "1s", sr.LABEL: token}}}}
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


class RollWorld:
    """A Consul agent, medic-register, a compose project `roll<u>` of the demo image, a spec."""

    def __init__(self, agent, docker_client, tmp_path, unique, instances=3, heal=None):
        self.agent, self.docker, self.tmp, self.unique = agent, docker_client, tmp_path, unique
        self.service = "roll-%s.example" % unique
        self.project = "roll%s" % unique
        self.token = "roll" + unique
        self.file = write_compose(str(tmp_path / "compose.json"), self.service, self.token)
        self.specs = str(tmp_path / "specs")
        self.audit = str(tmp_path / "audit.jsonl")
        self.overrides = str(tmp_path / "overrides")
        self.spec_path = sh.write_spec(self.specs, self.service, self.project, instances,
                                       dict({"grace": "20s"}, **(heal or {})), file=self.file)
        self.daemon = None
        self.images = []

    def start(self, n=3):
        self.daemon = sr.Daemon(self.agent.addr, self.token, registrar_id="reg-" + self.token, resync=5,
                                audit_log=str(self.tmp / "register.jsonl")).start()
        sh.compose_up(self.project, n, file=self.file)
        self.wait_passing(n)
        return self

    def variant(self, name, **kw):
        tag = make_variant(self.docker, "medic-demo:%s-%s" % (self.token, name), **kw)
        self.images.append(tag)
        return tag

    def env(self, **extra):
        return sh.heal_env(self.agent, self.specs, self.audit, MEDIC_OVERRIDE_DIR=self.overrides, **extra)

    def rollout(self, *args, env=None, timeout=300):
        return support.run_medic("medic-rollout", [self.service] + list(args), env=env or self.env(), timeout=timeout)

    def containers(self):
        return sh.containers(self.docker, self.project)

    def running_images(self):
        """Sorted image tags (Config.Image) of the running containers."""
        out = []
        for c in sh.running(self.docker, self.project):
            c.reload()
            out.append(c.attrs["Config"]["Image"])
        return sorted(out)

    def passing(self):
        return sh.passing(self.agent, self.service)

    def passing_images(self):
        """Image tag of each passing instance (through its container)."""
        out = []
        for e in self.agent.api("/v1/health/service/%s?passing" % self.service) or []:
            cid = (e["Service"].get("Meta") or {}).get("medic_container_id")
            out.append(self.docker.api.inspect_container(cid)["Config"]["Image"] if cid else None)
        return sorted(out)

    def wait_passing(self, n, timeout=60):
        return support.wait_for(lambda: self.passing() == n, timeout=timeout, what="%d passing" % n)

    def kv(self, kind):
        try:
            items = self.agent.api("/v1/kv/medic/default/%s/%s" % (kind, self.service))
        except Exception:
            return None
        import base64
        return json.loads(base64.b64decode(items[0]["Value"])) if items else None

    def records(self, what=None):
        from consul_medic.handlers.core import audit
        return [r for r in audit.read(self.audit) if r.get("kind") == "rollout"
                and (what is None or r.get("what") == what)]

    def down(self):
        sh.compose_down(self.project, file=self.file)
        if self.daemon is not None:
            self.daemon.stop()
        sr.remove_containers(self.docker, self.token)
        remove_images(self.docker, self.images)
        if os.path.isdir(self.overrides):
            for f in os.listdir(self.overrides):
                os.unlink(os.path.join(self.overrides, f))
