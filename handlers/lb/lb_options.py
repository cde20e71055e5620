"""medic-lb's option parsing: which services, --wait MIN:MAX, --var KEY=VALUE. Pure but for
--from-specs, which reads the spec directory."""
from ..core.errors import UsageError


def usage(text):
    return UsageError(text)


def selection(names=(), prefix=None, tag=None, from_specs=False, specs=None, env=None):
    """Keyword arguments for lb_view.Reader.view(); exactly one way of choosing is required."""
    ways = [w for w, on in (("--service", bool(names)), ("--prefix/--tag", bool(prefix or tag)),
                            ("--from-specs", from_specs)) if on]
    if not ways:
        raise UsageError("say which services: --service NAME, --prefix P, --tag T or --from-specs")
    if len(ways) > 1:
        raise UsageError("%s exclude each other" % " and ".join(ways))
    owners = {}
    if from_specs:
        from ..service import members
        from ..spec import spec
        loaded = spec.load_dir(spec.specs_dir(specs), env)
        names = tuple(loaded)
        if not names:
            raise UsageError("--from-specs: no spec in %s" % spec.specs_dir(specs))
        owners = {n: members.owner(sp) for n, sp in loaded.items()}
    for n in names:
        if not n or "/" in n:
            raise UsageError("--service %r is not a service name" % n)
    return {"names": tuple(names), "prefix": prefix, "tag": tag, "owners": owners}


def wait(raw):
    """'0.2s:2s' or '1s' (max = 4 x min, as consul-template) -> (min, max) seconds."""
    from ..spec.spec import parse_duration
    lo, _, hi = str(raw).partition(":")
    try:
        wmin = parse_duration(lo)
        wmax = parse_duration(hi) if hi else 4 * wmin
    except (ValueError, TypeError) as e:
        raise UsageError("--wait %r: %s" % (raw, e)) from None
    if wmin < 0 or wmax < wmin:
        raise UsageError("--wait %r: need 0 <= MIN <= MAX" % raw)
    return wmin, wmax


def variables(pairs):
    out = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k.strip():
            raise UsageError("--var %r is not KEY=VALUE" % p)
        out[k.strip()] = v
    return out
