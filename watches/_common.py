"""Shared helpers for the payload parsers: bounded stdin, JSON decoding, typed field access."""
import json

from ..handlers.core.errors import PayloadError

MAX_PAYLOAD = 8 * 1024 * 1024  # a checks watch of a large cluster is a few MB


def read_stream(stream, limit=MAX_PAYLOAD):
    """Read at most `limit` bytes of a payload; larger is an error, not a truncation."""
    buf = stream.buffer if hasattr(stream, "buffer") else stream
    data = buf.read(limit + 1)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > limit:
        raise PayloadError("payload larger than %d bytes" % limit)
    return data


def decode(data):
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("payload is not UTF-8") from None
    if not data.strip():
        raise PayloadError("payload is empty")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:  # e.g. 100,000 nested lists: one clear line, not an internal error
        raise PayloadError("payload is nested too deeply to be a watch payload") from None
    except ValueError as e:
        raise PayloadError("payload is not JSON: %s" % e) from None


def _no_constant(name):
    raise ValueError("%s is not a JSON number" % name)


def field(obj, key, kind, path, default=None, required=True):
    if not isinstance(obj, dict):
        raise PayloadError("%s: expected an object" % path)
    if key not in obj or obj[key] is None:
        if required:
            raise PayloadError("%s.%s: missing" % (path, key))
        return default
    value = obj[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise PayloadError("%s.%s: expected %s, got %s" % (path, key, _kind(kind), type(value).__name__))
    return value


def str_list(obj, key, path):
    value = field(obj, key, list, path, default=[], required=False)
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise PayloadError("%s.%s[%d]: expected a string" % (path, key, i))
    return tuple(value)


def str_map(obj, key, path):
    value = field(obj, key, dict, path, default={}, required=False)
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError("%s.%s.%s: expected a string" % (path, key, k))
    return tuple(sorted(value.items()))


def _kind(kind):
    return {str: "a string", int: "an integer", list: "a list", dict: "an object"}.get(kind, kind.__name__)
