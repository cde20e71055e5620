"""The `keyprefix` watch payload: the KV entries under a prefix.

    [{"Key": "medic/default/wake/www.example.com", "CreateIndex": 10, "ModifyIndex": 42,
      "LockIndex": 0, "Flags": 0, "Value": "<base64>", "Session": ""}, ...]

`null` or `[]`: no key under the prefix. Values are base64 (or null).
"""
import base64
import binascii
from collections import namedtuple

from ..handlers.core.errors import PayloadError
from ._common import decode, field

Entry = namedtuple("Entry", "key value modify_index")


def parse(data):
    """Payload bytes/str -> tuple of Entry. Raises PayloadError naming the JSON path."""
    return from_json(decode(data))


def looks_like(doc):
    """True for a decoded keyprefix payload (a list whose first item has a "Key")."""
    return doc is None or (isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict) and "Key" in doc[0])


def from_json(doc):
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise PayloadError("$: a keyprefix watch payload is a list, got %s" % type(doc).__name__)
    out = []
    for i, e in enumerate(doc):
        p = "$[%d]" % i
        raw = field(e, "Value", str, p, None, False)
        try:
            value = base64.b64decode(raw, validate=True) if raw is not None else None
        except (binascii.Error, ValueError):
            raise PayloadError("%s.Value: not base64" % p) from None
        out.append(Entry(field(e, "Key", str, p), value, field(e, "ModifyIndex", int, p, 0, False)))
    return tuple(out)


def names_under(entries, prefix):
    """{last key part: ModifyIndex} of the entries directly under `prefix` (ending in '/')."""
    out = {}
    for e in entries:
        if e.key.startswith(prefix):
            name = e.key[len(prefix):]
            if name and "/" not in name:
                out[name] = max(out.get(name, 0), e.modify_index)
    return out
