"""The spec cache: a validated, normalised spec document per file, so the hot path skips jsonschema.

Keyed by the file's inode, mtime and size and the schema's mtime and size; stored
as marshal under $MEDIC_CACHE_DIR (empty: off) or $XDG_CACHE_HOME/consul-medic, a directory
medic owns (handlers/core/private.py: 0700, its owner checked, never through a symlink; a file that
is not a regular file of medic's user is a miss).
A whole specs directory also has one entry (`dir_get`/`dir_put`), keyed by every
file's name, inode, mtime and size: a pass over 1,000 specs opens one cache file,
not 1,000. The cache is an optimisation only: every failure reads as a miss.
"""
import marshal
import os
import stat

CACHE_VERSION = 2  # 2: durations bounded (handlers.durations)


def cache_dir(environ=None):
    env = os.environ if environ is None else environ
    if env.get("MEDIC_CACHE_DIR") is not None:
        return env["MEDIC_CACHE_DIR"] or None  # empty string disables the cache
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "consul-medic")


def cache_key(st, schema_st):
    return (CACHE_VERSION, st.st_ino, st.st_mtime_ns, st.st_size, schema_st.st_mtime_ns, schema_st.st_size)


def _file(cdir, real, prefix="spec"):
    return os.path.join(cdir, prefix + real.replace("%", "%25").replace("/", "%") + ".marshal")


def dir_key(names_stats, schema_st):
    """[(name, stat)] of a directory's spec files -> its key (None if one is not a regular file)."""
    files = []
    for name, st in names_stats:
        if not stat.S_ISREG(st.st_mode):
            return None
        files.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return (CACHE_VERSION, schema_st.st_mtime_ns, schema_st.st_size, tuple(files))


def dir_get(cdir, realdir, key):
    """The directory's documents, in file-name order, if stored under this key; else None."""
    return get(cdir, realdir, key, prefix="dir")


def dir_put(cdir, realdir, key, docs):
    put(cdir, realdir, key, list(docs), prefix="dir")


def get(cdir, real, key, prefix="spec"):
    from ..core import private
    try:
        raw = private.read(cdir, os.path.basename(_file(cdir, real, prefix)))
        if raw is None:
            return None
        stored_key, doc = marshal.loads(raw)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return doc if stored_key == key else None


def put(cdir, real, key, doc, prefix="spec"):
    from ..core import private
    try:
        private.write(cdir, os.path.basename(_file(cdir, real, prefix)), marshal.dumps((key, doc)))
    except (OSError, ValueError):
        pass  # the cache is an optimisation only
