"""medic-lb: render load-balancer configuration from Consul (docs/medic-lb.md).

    medic-lb --template nginx-http|nginx-stream|haproxy|FILE --out FILE [--once | --watch]
             [--service NAME]... [--prefix P] [--tag T] [--from-specs] [--var KEY=VALUE]...
             [--check-cmd 'nginx -t -q -c {}'] [--reload-cmd 'nginx -s reload'] [--wait 0.2s:2s]

Never writes an empty upstream: a service with no passing instance keeps its last good
servers, the run says why, exits 1 and alerts through medic-notify. As a Consul watch
handler run it with --once: the payload on stdin is not read, Consul is re-read.
Exit: 0 rendered or unchanged; 1 a service kept its last good servers or was left out;
2 the candidate failed --check-cmd or --reload-cmd failed; 3 bad input, Consul failure.
"""
import sys

from ..core import runtime


def build():
    import click

    from ..core import options

    @click.command(help=__doc__.split("\n\n")[0])
    @click.option("--template", "template", required=True, metavar="NAME|FILE",
                  help="Built-in nginx-http, nginx-stream, haproxy, or a Jinja2 file.")
    @click.option("--out", "out", required=True, metavar="FILE", help="The configuration file to write.")
    @click.option("--once", "once", is_flag=True, help="Render once and exit (the default; also as a watch handler).")
    @click.option("--watch", "watch", is_flag=True, help="Keep running: blocking queries, re-render on change.")
    @click.option("--wait", "wait", default="0.2s:2s", show_default=True, metavar="MIN:MAX",
                  help="Coalesce bursts in --watch: quiet for MIN, at most MAX after the first change.")
    @click.option("--service", "service", multiple=True, metavar="NAME", help="Render this service (repeatable).")
    @click.option("--prefix", "prefix", metavar="P", help="Render the services whose name starts with P.")
    @click.option("--tag", "tag", metavar="T", help="Render the services carrying tag T.")
    @click.option("--from-specs", "from_specs", is_flag=True, help="Render the services of the spec files (--specs).")
    @click.option("--var", "var", multiple=True, metavar="KEY=VALUE", help="Template variable (repeatable).")
    @click.option("--check-cmd", "check_cmd", metavar="ARGV",
                  help="Validate the candidate before it replaces --out; {} is the candidate's path.")
    @click.option("--reload-cmd", "reload_cmd", metavar="ARGV", help="Run after --out changed; {} is --out.")
    @click.option("--state", "state", metavar="FILE", help="Last good servers [default: <out>.medic-lb.json].")
    @click.option("--metrics-addr", "metrics_addr", metavar="HOST:PORT",
                  help="With --watch: serve Prometheus /metrics here, e.g. 127.0.0.1:9465.")
    @options.audit_log
    @options.common
    def cmd(template, out, once, watch, wait, service, prefix, tag, from_specs, var, check_cmd, reload_cmd,
            state, metrics_addr, audit_log, specs, env, consul_addr, token, token_file, consul_timeout, verbose):
        from ..core import alerts, audit
        from . import lb_apply, lb_core, lb_options, lb_render
        from ..consul import settings
        if once and watch:
            raise lb_options.usage("--once and --watch exclude each other")
        if metrics_addr and not watch:
            raise lb_options.usage("--metrics-addr goes with --watch (one-shot runs: MEDIC_METRICS_TEXTFILE_DIR)")
        env_name = settings.environment(env)
        selection = lb_options.selection(service, prefix, tag, from_specs, specs, env_name)
        wait_min, wait_max = lb_options.wait(wait)
        variables = lb_options.variables(var)
        tpl = lb_render.load_template(template)
        applier = lb_apply.Applier(out, lb_apply.parse_command(check_cmd, "--check-cmd", True),
                                   lb_apply.parse_command(reload_cmd, "--reload-cmd", False))
        s = settings.resolve(consul_addr, token, token_file, consul_timeout)
        log = audit.AuditLog(audit.audit_path(audit_log), secrets=[s.token])
        renderer = lb_core.Renderer(
            s, env_name, tpl, applier, lb_apply.State(state or applier.out + ".medic-lb.json"), selection,
            variables, log, lambda event: alerts.emit(event, log, specs, env_name, s))
        if not watch:
            return renderer.once()
        if metrics_addr:
            from ..core import metrics_export as metrics
            metrics.serve(metrics_addr, "medic-lb")
            renderer.beat = metrics.beat
        return lb_core.watch_until_signal(renderer, wait_min, wait_max)

    return cmd


def main():
    runtime.run(build, prog="medic-lb", deadline=0 if "--watch" in sys.argv[1:] else 60.0)


if __name__ == "__main__":
    main()
