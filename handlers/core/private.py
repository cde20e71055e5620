"""Medic's own files (compose overrides, the spec cache, batch state) live in a directory medic owns.

    medic_dir(environ)              $XDG_CACHE_HOME/consul-medic, else ~/.cache/consul-medic
    ensure(path)                    the directory, made 0700 if absent; PrivateDirError unless it is a
                                    real directory (not a symlink) owned by this user, mode 0700
                                    (a directory of ours that is wider is narrowed to 0700)
    write(dirpath, name, data)      atomically: a new file opened O_CREAT|O_EXCL|O_NOFOLLOW (0600 or
                                    `mode`) relative to the checked directory, then renamed over `name`
    read(dirpath, name, limit)      the bytes of `name` when it is a regular file of ours (O_NOFOLLOW,
                                    no FIFO blocks us); None when absent; PrivateDirError otherwise

Every name is a single path component (no "/", not "." or ".."). Paths are resolved relative to a
descriptor of the checked directory, so a directory swapped after the check is never followed.
"""
import os
import stat

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PrivateDirError(OSError):
    """A directory or file medic will not use: someone else's, a symlink, or open to others."""


def medic_dir(environ=None):
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "consul-medic")


def _check_name(name):
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise PrivateDirError("%r: not a single file name" % name)


def _open_dir(path, create):
    path = os.path.abspath(path)
    if create:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            raise PrivateDirError("%s is a symbolic link: medic will not use it" % path) from None
        raise e
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise PrivateDirError("%s is not a directory" % path)
        if st.st_uid != os.geteuid():
            raise PrivateDirError("%s belongs to uid %d, not to this user (%d): medic will not use it"
                                  % (path, st.st_uid, os.geteuid()))
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)  # ours, but open to others: narrowed before any use
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure(path):
    """The directory (created 0700 when absent), checked; returns its path."""
    os.close(_open_dir(path, True))
    return path


def write(dirpath, name, data, mode=0o600):
    """Write `data` (bytes) to dirpath/name atomically; returns the file's path."""
    _check_name(name)
    dfd = _open_dir(dirpath, True)
    try:
        tmp = ".%s.%d.%s.tmp" % (name, os.getpid(), os.urandom(4).hex())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    finally:
        os.close(dfd)
    return os.path.join(dirpath, name)


def read(dirpath, name, limit=64 * 1024 * 1024):
    """The bytes of dirpath/name, or None when it (or the directory) does not exist."""
    _check_name(name)
    try:
        dfd = _open_dir(dirpath, False)
    except FileNotFoundError:
        return None
    try:
        try:
            fd = os.open(name, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK | CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PrivateDirError("%s/%s: %s (a symbolic link?)" % (dirpath, name, e.strerror)) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise PrivateDirError("%s/%s: not a regular file of this user" % (dirpath, name))
            data = f.read(limit + 1)
        if len(data) > limit:
            raise PrivateDirError("%s/%s: larger than %d bytes" % (dirpath, name, limit))
        return data
    finally:
        os.close(dfd)
