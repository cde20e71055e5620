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


def hook_argv(outdir, exit_code=0, sleep=0.0):
    """argv of a command channel that records each message as <outdir>/<n>.json."""
    return [sys.executable, HOOK, outdir, str(exit_code), str(sleep)]


def hook_messages(outdir):
    out = []
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
