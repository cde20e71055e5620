"""The spec cache: a validated, normalised spec document per file, so the hot path skips jsonschema.

Keyed by the file's inode, mtime and size and the schema's mtime and size; stored
as marshal under $MEDIC_CACHE_DIR (empty: off) or $XDG_CACHE_HOME/consul-medic.
The cache is an optimisation only: every failure reads as a miss.
"""
import marshal
import os

CACHE_VERSION = 2  # 2: durations bounded (handlers.durations)


def cache_dir(environ=None):
    env = os.environ if environ is None else environ
    if env.get("MEDIC_CACHE_DIR") is not None:
        return env["MEDIC_CACHE_DIR"] or None  # empty string disables the cache
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "consul-medic")


def cache_key(st, schema_st):
    return (CACHE_VERSION, st.st_ino, st.st_mtime_ns, st.st_size, schema_st.st_mtime_ns, schema_st.st_size)


def _file(cdir, real):
    return os.path.join(cdir, "spec" + real.replace("%", "%25").replace("/", "%") + ".marshal")


def get(cdir, real, key):
    try:
        with open(_file(cdir, real), "rb") as f:
            stored_key, doc = marshal.load(f)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return doc if stored_key == key else None


def put(cdir, real, key, doc):
    try:
        os.makedirs(cdir, mode=0o700, exist_ok=True)
        target = _file(cdir, real)
        tmp = "%s.%d.tmp" % (target, os.getpid())
        with open(tmp, "wb") as f:
            marshal.dump((key, doc), f)
        os.replace(tmp, target)
    except (OSError, ValueError):
        pass  # the cache is an optimisation only
