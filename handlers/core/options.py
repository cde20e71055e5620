"""Options every medic-* executable shares, declared once.

`OPTIONS` is the single table. `common()` turns it into click decorators for the
full command; `parse_fast()` reads the same table for the hot path of
`medic-check`, which cannot afford to import click. `parse_fast` accepts only
what it fully understands and returns None for anything else (--help, typos,
missing arguments), so the click command gives the real, mapped usage error.
Environment variables are resolved in `settings`/`spec`, not here, so their
precedence lives in one place.
"""

# (flag, destination, takes a value, help)
OPTIONS = (
    ("--specs", "specs", True, "Directory of spec files [env MEDIC_SPECS; default /etc/consul-medic/specs]."),
    ("--env", "env", True, "Environment whose overrides apply, e.g. test or live [env MEDIC_ENV]."),
    ("--consul-addr", "consul_addr", True,
     "Consul HTTP address [env CONSUL_HTTP_ADDR; the spec environment's consul_addr wins over the env var; "
     "default http://127.0.0.1:8500]."),
    ("--token", "token", True, "Consul ACL token [env CONSUL_HTTP_TOKEN]; never printed."),
    ("--token-file", "token_file", True, "File holding the Consul ACL token [env CONSUL_HTTP_TOKEN_FILE]."),
    ("--consul-timeout", "consul_timeout", True, "Seconds for each Consul HTTP call [env MEDIC_CONSUL_TIMEOUT; 5]."),
)
VERBOSE = ("-v", "--verbose")
AUDIT_LOG_HELP = "Audit log [env MEDIC_AUDIT_LOG; default /var/lib/consul-medic/audit.jsonl]."


def common(f):
    """Decorate a click command with the shared options (click imported lazily)."""
    import click

    for flag, dest, _, help_ in reversed(OPTIONS):
        kwargs = {"type": float} if dest == "consul_timeout" else {}
        f = click.option(flag, dest, metavar="SECONDS" if kwargs else None, help=help_, **kwargs)(f)
    f = click.option(*VERBOSE, "verbose", count=True, help="More output; tracebacks on errors.")(f)
    return f


def audit_log(f):
    """Decorate a click command with `--audit-log FILE` (dest `audit_log`), declared here once."""
    import click

    return click.option("--audit-log", "audit_log", metavar="FILE", help=AUDIT_LOG_HELP)(f)


def parse_fast(argv, flags=(), values=(), positionals=1):
    """Parse `argv` against OPTIONS plus extra boolean `flags` and valued `values`.

    Returns {"args": [...], dest: value, ...} or None when the argv is anything
    but a plain, well-formed invocation.
    """
    table = {flag: (dest, takes) for flag, dest, takes, _ in OPTIONS}
    for flag in flags:
        table[flag] = (flag.lstrip("-").replace("-", "_"), False)
    for flag in values:
        table[flag] = (flag.lstrip("-").replace("-", "_"), True)
    out = {dest: None for dest, _ in table.values()}
    out["verbose"] = 0
    args = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in VERBOSE:
            out["verbose"] += 1
        elif a.startswith("-") and a != "-":
            name, eq, val = a.partition("=")
            if name not in table:
                return None
            dest, takes = table[name]
            if takes:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        return None
                    val = argv[i]
                if out[dest] is not None:
                    return None  # repeated: let click decide
                out[dest] = val
            else:
                if eq:
                    return None
                out[dest] = True
        else:
            args.append(a)
        i += 1
    if len(args) != positionals:
        return None
    if out.get("consul_timeout") is not None:
        try:
            out["consul_timeout"] = float(out["consul_timeout"])
        except ValueError:
            return None
    out["args"] = args
    return out


TOKEN_ARGV_WARNING = ("warning: --token is visible to other users (ps, /proc): "
                      "use --token-file or CONSUL_HTTP_TOKEN_FILE")
