"""The daemon loop of medic-register: engine events, periodic resyncs, retries with backoff."""
from ..core.errors import ConsulError, EngineError
from ..engine.engine import failures as engine_failures


def docker_client(timeout):
    """The docker SDK's client (DOCKER_HOST honoured; the event stream) with an explicit timeout."""
    from ..engine import engine
    return engine.connect(timeout=timeout, sdk=True, ping=False)


class EventPump:
    """Thread: follows the engine's container events into a queue; reconnects with backoff.

    Puts ("connected",) after each (re)subscription, BEFORE any event of that stream, so
    the loop resyncs with nothing missed between the listing and the stream; ("lost", why)
    when the stream ends or fails; ("event", dict) for each event.
    """

    def __init__(self, make_client, queue, stop, filters=(), backoff=(0.2, 5.0)):
        self.make_client, self.queue, self.stop, self.filters = make_client, queue, stop, tuple(filters)
        self.backoff = backoff
        self.stream = None
        import threading
        self.thread = threading.Thread(target=self._run, name="medic-register-events", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        s = self.stream
        if s is not None:
            try:
                s.close()
            except engine_failures():
                pass

    def _run(self):
        delay = self.backoff[0]
        while not self.stop.is_set():
            client = None
            try:
                client = self.make_client()
                client.ping()
                filters = {"type": ["container"]}
                if self.filters:
                    filters["label"] = list(self.filters)
                self.stream = client.events(decode=True, filters=filters)
                self.queue.put(("connected",))
                delay = self.backoff[0]
                for ev in self.stream:
                    if self.stop.is_set():
                        break
                    self.queue.put(("event", ev))
                if not self.stop.is_set():
                    self.queue.put(("lost", "event stream ended"))
            except Exception as e:  # noqa: BLE001 boundary: the pump thread never dies; any failure is one ("lost", why), audited, reconnect
                if not self.stop.is_set():
                    self.queue.put(("lost", str(e).splitlines()[0] if str(e) else type(e).__name__))
            finally:
                self.stream = None
                if client is not None:
                    try:
                        client.close()
                    except engine_failures():
                        pass
            self.stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])


def serve(registrar, make_client, stop, queue, resync_every=30.0, role_watch=None, log=None, filters=()):
    """The daemon loop: events, periodic resync, retries with backoff, until `stop` is set.

    Put ("stop",) on `queue` after setting `stop` to wake the loop at once (signal handlers).
    """
    import queue as queue_mod
    log = log or (lambda msg: None)
    pump = EventPump(make_client, queue, stop, filters).start()
    if role_watch is not None:
        role_watch.start()
    clock = registrar.clock
    need_list, list_at, consul_at = False, 0.0, 0.0
    list_delay = consul_delay = 0.2
    next_resync = clock() + resync_every if resync_every else float("inf")
    consul_down = engine_down = False
    why = "initial resync"
    try:
        while not stop.is_set():
            now = clock()
            deadlines = [next_resync]
            if need_list and not engine_down:  # while the engine is away, its reconnect wakes us
                deadlines.append(list_at)
            if registrar.pending or registrar.pending_full:
                deadlines.append(consul_at)
            if registrar.next_retry(after=now) is not None:  # a refused request's own retry time
                deadlines.append(registrar.next_retry(after=now))
            items = []
            try:
                items.append(queue.get(timeout=min(max(0.0, min(deadlines) - now), 3600.0)))
                while True:
                    items.append(queue.get_nowait())
            except queue_mod.Empty:
                pass
            for item in items:
                kind = item[0]
                if kind == "connected":
                    need_list, list_at = True, 0.0
                    if engine_down:
                        log("engine: event stream reconnected: full resync")
                        registrar.record({"action": "engine", "reason": "event stream reconnected: full resync"})
                        why = "resync after reconnect"
                    engine_down = False
                elif kind == "lost":
                    if not engine_down:
                        log("engine: %s: reconnecting with backoff" % item[1])
                        registrar.record({"action": "engine", "reason": "event stream lost: %s" % item[1]})
                    engine_down = True
                elif kind == "event":
                    consul_at = min(consul_at, clock())  # news from the engine: try Consul now, not after the backoff
                    try:
                        registrar.on_event(item[1])
                    except EngineError as e:
                        log(str(e))
                        need_list, list_at = True, clock() + list_delay
                elif kind == "roles":
                    registrar.pending_full = True
            if stop.is_set():
                break
            now = clock()
            if now >= next_resync:
                need_list, list_at, next_resync = True, 0.0, now + resync_every
                why = "periodic resync"
            if need_list and now >= list_at and not engine_down:
                try:
                    registrar.list_containers()
                    need_list, list_delay = False, 0.2
                except EngineError as e:
                    log(str(e))
                    list_at, list_delay = now + list_delay, min(list_delay * 2, 5.0)
            registrar.due_retries(now)
            if (registrar.pending or registrar.pending_full) and now >= consul_at:
                try:
                    d, full = registrar.sync_pending(allow_full=not need_list)
                    if full:
                        registrar.record_resync(d, why)
                        why = "resync"
                    if consul_down:
                        log("consul: the agent answers again: converged")
                        registrar.record({"action": "consul", "reason": "the agent answers again: converged"})
                    consul_down, consul_delay = False, 0.2
                except ConsulError as e:
                    if not consul_down:
                        log("%s: retrying with backoff, changes kept" % e)
                        registrar.record({"action": "consul", "reason": "%s: retrying, changes kept" % e})
                    consul_down = True
                    consul_at, consul_delay = now + consul_delay, min(consul_delay * 2, 5.0)
    finally:
        stop.set()
        pump.close()
    return registrar
