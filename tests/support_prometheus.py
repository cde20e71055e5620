"""A real Prometheus and node_exporter for the metrics tests: own throwaway config and data
directory, loopback only, free ports, 1 s scrape and evaluation; stopped by the fixture."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import support

ROOT = support.ROOT
RULES = os.path.join(ROOT, "deploy", "prometheus", "medic-rules.yml")
RULE_TESTS = os.path.join(ROOT, "deploy", "prometheus", "medic-rules.test.yml")
EXAMPLE = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")


def binary(name):
    path = shutil.which(name)
    support.require(path is not None, "%s (Debian's prometheus / prometheus-node-exporter; run `make testbed`)"
                    % name)
    return path


class Proc:
    def __init__(self, argv, log, ready_url):
        self.argv, self.log_path, self.ready_url = argv, log, ready_url
        self.proc = None

    def start(self, timeout=30):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited: %s" % (self.argv[0], self.tail()))
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("%s not ready after %d s: %s" % (self.argv[0], timeout, self.tail()))

    def tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self._log.close()


def node_exporter(workdir, textfile_dir):
    port = support.free_port()
    argv = [binary("prometheus-node-exporter"), "--collector.disable-defaults", "--collector.textfile",
            "--collector.textfile.directory=" + textfile_dir, "--web.listen-address=127.0.0.1:%d" % port]
    p = Proc(argv, os.path.join(workdir, "node-exporter.log"), "http://127.0.0.1:%d/metrics" % port)
    p.addr = "127.0.0.1:%d" % port
    return p


def prometheus(workdir, targets, rules=(RULES,), interval="1s"):
    """targets: {job: [host:port]}"""
    port = support.free_port()
    conf = os.path.join(workdir, "prometheus.yml")
    jobs = "".join('  - job_name: %s\n    static_configs:\n      - targets: %s\n' % (job, json.dumps(list(t)))
                   for job, t in targets.items())
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: %s\n  evaluation_interval: %s\nrule_files: %s\nscrape_configs:\n%s"
                % (interval, interval, json.dumps(list(rules)), jobs))
    argv = [binary("prometheus"), "--config.file=" + conf, "--storage.tsdb.path=" + os.path.join(workdir, "tsdb"),
            "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"]
    p = Proc(argv, os.path.join(workdir, "prometheus.log"), "http://127.0.0.1:%d/-/ready" % port)
    p.url = "http://127.0.0.1:%d" % port
    return p


def query(url, expr):
    """Instant query -> [(labels, value)]."""
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen("%s/api/v1/query?%s" % (url, q), timeout=5) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return [(s["metric"], float(s["value"][1])) for s in doc["data"]["result"]]


def alerts(url, name=None):
    with urllib.request.urlopen("%s/api/v1/alerts" % url, timeout=5) as r:
        doc = json.load(r)
    return [a for a in doc["data"]["alerts"] if name is None or a["labels"].get("alertname") == name]


def wait_query(url, expr, pred, timeout=30, what=None):
    last = []

    def ok():
        last[:] = query(url, expr)
        return pred(last)
    try:
        return support.wait_for(ok, timeout, interval=0.5, what=what or expr)
    except AssertionError:
        raise AssertionError("%s: last result %r" % (what or expr, last)) from None
