"""Test helpers for medic-notify: a real local HTTP receiver and a command-channel hook.

Receiver: a tiny http.server on 127.0.0.1 in a thread that records every request
(path, headers, body) and answers from a script: a list of behaviours consumed in
order ("ok", 500, "hang" = never answer before the client times out), then `default`.
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOOK = os.path.abspath(__file__)


class Receiver:
    def __init__(self, script=(), default="ok", hang_seconds=30.0):
        self.requests = []
        self.script = list(script)
        self.default = default
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": body.decode("utf-8", "replace"), "time": time.time()})
                    what = outer.script.pop(0) if outer.script else outer.default
                if what == "hang":
                    outer._stop.wait(outer.hang_seconds)
                    return
                code = 200 if what == "ok" else int(what)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def bodies(self):
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def count(self):
        with self.lock:
            return len(self.requests)


def write_spec(specs_dir, service, notify=None, instances=3, **extra):
    os.makedirs(specs_dir, exist_ok=True)
    doc = {"service": service, "instances": instances, "scale": {"driver": "swarm", "service": "web"}}
    if notify is not None:
        doc["notify"] = notify
    doc.update(extra)
    path = os.path.join(specs_dir, service + ".json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


OUTPUT = {"passing": "MEDIC OK - %s %d/%d passing | passing=%d;;;0 desired=%d;;;0",
          "warning": "MEDIC WARNING - %s %d/%d passing | passing=%d;;;0 desired=%d;;;0",
          "critical": "MEDIC CRITICAL - %s %d/%d passing | passing=%d;;;0 desired=%d;;;0"}


def medic_output(service, status, live, desired):
    return OUTPUT[status] % (service, live, desired, live, desired)


def check(service, status, live, desired=3, index=10, node="mon1"):
    """One check of medic's own `medic` service, as a checks watch payload carries it."""
    return {"Node": node, "CheckID": "medic:" + service, "Name": "medic " + service, "Status": status,
            "Notes": "", "Output": medic_output(service, status, live, desired), "ServiceID": "medic",
            "ServiceName": "medic", "ServiceTags": [], "CreateIndex": 1, "ModifyIndex": index}


def kv_record(agent, key):
    """The JSON record stored at a KV key of `agent`, or None when there is none."""
    import base64
    import urllib.error
    try:
        (item,) = agent.api("/v1/kv/" + key)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
    return json.loads(base64.b64decode(item["Value"]))


def hook_argv(outdir, exit_code=0, sleep=0.0):
    """argv of a command channel that records each message as <outdir>/<n>.json."""
    return [sys.executable, HOOK, outdir, str(exit_code), str(sleep)]


def hook_messages(outdir):
    out = []
    if not os.path.isdir(outdir):
        return out
    for name in sorted(os.listdir(outdir), key=lambda n: float(n.split("-")[0])):
        if name.endswith(".json"):
            with open(os.path.join(outdir, name)) as f:
                out.append(json.load(f))
    return out


def _hook_main(outdir, exit_code, sleep):
    data = sys.stdin.read()
    time.sleep(float(sleep))
    os.makedirs(outdir, exist_ok=True)
    rec = {"stdin": data, "env": dict(os.environ), "argv": sys.argv}
    name = "%.6f-%d.json" % (time.time(), os.getpid())
    with open(os.path.join(outdir, name + ".tmp"), "w") as f:
        json.dump(rec, f)
    os.rename(os.path.join(outdir, name + ".tmp"), os.path.join(outdir, name))
    if int(exit_code):
        print("hook failing on purpose")
    sys.exit(int(exit_code))


if __name__ == "__main__":
    _hook_main(*sys.argv[1:4])
