"""Helpers for the count-check, batch and config tests and the bench (real agents only)."""
import json
import os
import re
import socket
import threading

import support

REQUEST_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")


def write_spec(dirpath, service, instances, **extra):
    """A valid spec file `<dir>/<service>.json` (swarm driver: nothing to run)."""
    doc = {"service": service, "instances": instances, "scale": {"driver": "swarm", "service": "web"}}
    doc.update(extra)
    os.makedirs(dirpath, exist_ok=True)
    path = os.path.join(dirpath, service + ".json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def check_env(cache_dir, **extra):
    """Environment for medic-check subprocesses with a private spec cache."""
    return support.medic_env(MEDIC_CACHE_DIR=cache_dir, **extra)


def run_check(args, cache_dir, **extra):
    return support.run_medic("medic-check", [str(a) for a in args], env=check_env(cache_dir, **extra), timeout=60)


def register_medic_ttl(agent, services, ttl="10m"):
    """medic's own service on `agent` with a TTL count check `medic:<service>` per service."""
    agent.api("/v1/agent/service/register", "PUT", {
        "ID": "medic", "Name": "medic",
        "Checks": [{"CheckID": "medic:" + s, "Name": "medic count " + s, "TTL": ttl} for s in services]})


class CountingProxy:
    """A TCP proxy in front of a Consul agent that records every HTTP request line.

    `requests` is the list of (method, path) the clients sent, in order.
    """

    def __init__(self, target_host, target_port, host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.requests = []
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, 0))
        self._srv.listen(64)
        self.host, self.port = host, self._srv.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return "http://%s:%d" % (self.host, self.port)

    def reset(self):
        with self._lock:
            del self.requests[:]

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=30)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, count):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    buf += data
                    end = 0
                    for m in REQUEST_LINE.finditer(buf):
                        with self._lock:
                            self.requests.append((m.group(1).decode(), m.group(2).decode()))
                        end = m.end()
                    buf = buf[end:][-8192:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self._closed = True
        self._srv.close()
