"""The deployed image of a service: the KV record medic-rollout writes, and the compose
override file that makes compose start that image.

    medic/<env>/image/<service>   {"image": "repo:tag", "at": epoch, "by": "medic-rollout@host pid N"}

medic-rollout writes the record when a rollout completes; medic-heal reads it, and its
compose scaler adds `-f compose_override(spec, image)` so a replacement runs the image
the service was rolled to, not the one the compose file names.

The override is JSON (compose reads YAML, and JSON is YAML):
    {"services": {"<compose service>": {"image": "<image>"}}}
written atomically under MEDIC_OVERRIDE_DIR (default: <tmp>/consul-medic-overrides),
one file per (project, service, image), so concurrent writers never clash.
"""
import hashlib
import json
import os
import socket
import tempfile
import time

from ..core import keys
from ..consul import kv
from ..core.errors import ConsulError, UsageError
from ..consul.consul_errors import failures as consul_failures

VALID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@")


def image_key(env, service):
    return keys.key(env, "image", service)


def check_ref(image):
    """An image reference as typed by the user; UsageError on anything compose could misread."""
    if not image or len(image) > 255 or not set(image) <= VALID or image.startswith(("-", ":", "/")):
        raise UsageError("image %r: expected REPOSITORY[:TAG] or an image ID" % (image or "")[:80])
    return image


def with_tag(image):
    """'repo' -> 'repo:latest'; 'repo:tag', 'host:5000/repo:tag', 'sha256:...' unchanged."""
    if image.startswith("sha256:") or "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else image + ":latest"


def by():
    return "medic-rollout@%s pid %d" % (socket.gethostname(), os.getpid())


def read_image(client, env, service):
    """The recorded image reference, or None. ConsulError when Consul does not answer."""
    key = image_key(env, service)
    doc, _ = kv.read(client, key)
    if doc is None or (isinstance(doc, kv.Unreadable) and not doc.raw):
        return None  # absent, or an empty value
    try:
        return check_ref(str(doc["image"]))
    except (ValueError, KeyError, TypeError, UsageError):
        raise ConsulError("KV %s holds no valid image record; fix or delete it" % key) from None


def record_image(client, env, service, image, now=None):
    key = image_key(env, service)
    doc = {"image": check_ref(image), "at": time.time() if now is None else now, "by": by()}
    try:
        ok = client.kv.put(key, json.dumps(doc, sort_keys=True))
    except consul_failures() as e:
        raise ConsulError("cannot write KV %s: %s" % (key, _reason(e))) from None
    if not ok:
        raise ConsulError("KV %s: write refused" % key)
    return doc


def compose_files(client, env, spec):
    """The extra `-f` files medic-heal's compose scaler adds: [override path] when an image is
    recorded for the service, else []. ConsulError when Consul does not answer."""
    image = read_image(client, env, spec.service)
    return [compose_override(spec, image)] if image else []


def override_dir(environ=None):
    env = os.environ if environ is None else environ
    return env.get("MEDIC_OVERRIDE_DIR") or os.path.join(tempfile.gettempdir(), "consul-medic-overrides")


def compose_override(spec, image, directory=None):
    """Path of a compose override file setting `image` for the spec's compose service."""
    check_ref(image)
    doc = json.dumps({"services": {spec.scale.service: {"image": image}}}, sort_keys=True) + "\n"
    directory = directory or override_dir()
    os.makedirs(directory, mode=0o755, exist_ok=True)
    digest = hashlib.sha256(("%s\0%s\0%s" % (spec.scale.project, spec.scale.service, image)).encode()).hexdigest()
    path = os.path.join(directory, "%s-%s-%s.json" % (spec.scale.project, spec.scale.service, digest[:12]))
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == doc:
                return path
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".override-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(doc)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _reason(e):
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
