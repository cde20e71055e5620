"""The light engine client (handlers/engine/engine.py) and the scaler's engine fast path.

Pure parts with literal data; the client and the fast path against the real engine,
side by side with the docker SDK's view of the same containers.
"""
import os
import subprocess
import sys

import pytest

import support_heal as sh
from consul_medic.handlers.engine import engine, scaler
from consul_medic.handlers.core.errors import EngineError
from consul_medic.handlers.spec.spec import Scale
from consul_medic.handlers.engine import engine_http


# -- pure ----------------------------------------------------------------------------------
def test_where_reads_docker_host():
    assert engine.where({}) == ("unix", "/var/run/docker.sock")
    assert engine.where({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == ("unix", "/run/user/1000/docker.sock")
    assert engine.where({"DOCKER_HOST": "tcp://127.0.0.1:2375"}) == ("tcp", ("127.0.0.1", 2375))
    assert engine.where({"DOCKER_HOST": "tcp://[::1]:2376"}) == ("tcp", ("::1", 2376))
    assert engine.where({"DOCKER_HOST": "tcp://10.0.0.5"}) == ("tcp", ("10.0.0.5", 2375))
    # left to the SDK: ssh, TLS
    assert engine.where({"DOCKER_HOST": "ssh://me@host"}) is None
    assert engine.where({"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1"}) is None
    with pytest.raises(EngineError, match="port"):
        engine.where({"DOCKER_HOST": "tcp://h:abc"})


def test_filters_query_is_the_apis_json():
    assert engine.filters_query({"label": ["a=b", "c"]}) == '{"label":["a=b","c"]}'
    assert engine.filters_query({"status": "exited"}) == '{"status":["exited"]}'


def c(n, state, depends=""):
    return {"Id": "id%d" % n, "Names": ["/p-web-%d" % n], "State": state,
            "Labels": {"com.docker.compose.container-number": str(n), "com.docker.compose.depends_on": depends}}


def test_plan_starts_only_when_starting_is_all_compose_would_do():
    assert [x["Id"] for x in scaler.plan_starts([c(1, "running"), c(3, "exited"), c(2, "created")], 3)] == [
        "id2", "id3"]
    assert scaler.plan_starts([c(1, "running"), c(2, "running")], 2) == []  # nothing to start
    assert scaler.plan_starts([c(1, "running"), c(2, "exited")], 3) == []  # one to create: compose
    assert scaler.plan_starts([c(1, "exited"), c(2, "exited"), c(3, "exited")], 2) == []  # one to remove: compose
    assert scaler.plan_starts([c(1, "running"), c(2, "dead")], 2) == []  # unusual state: compose
    assert scaler.plan_starts([c(1, "running"), c(2, "paused")], 2) == []
    assert scaler.plan_starts([c(1, "running"), c(2, "exited", depends="db:service_started:false")], 2) == []


def test_compose_command_finds_the_plugin_without_running_it(tmp_path):
    plugin = tmp_path / "docker-compose"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)

    def run(argv, **kw):
        raise AssertionError("ran %s" % argv)

    assert scaler.compose_command(which=lambda n: "/usr/bin/" + n, run=run,
                                  plugin_dirs=[str(tmp_path / "none"), str(tmp_path)]) == ["docker", "compose"]
    assert str(tmp_path / "x" / "cli-plugins") in scaler.cli_plugin_dirs({"DOCKER_CONFIG": str(tmp_path / "x")})


def test_fast_path_needs_an_engine_that_lists():
    sc = scaler.ComposeScaler(Scale("compose", "p", "/f.yml", "web"), 5, engine=None, base=["false"])
    assert sc.start_stopped(3) is None


# -- against the real engine ---------------------------------------------------------------
@pytest.mark.docker
def test_light_client_sees_what_the_sdk_sees(docker_client, compose, demo_image, unique):
    project = "medicspeed%s" % unique
    c = engine.connect(timeout=10)
    try:
        sh.compose_up(project, 2)
        flt = {"label": ["com.docker.compose.project=" + project, "com.docker.compose.service=web"]}
        mine = c.api.containers(all=True, filters=flt)
        theirs = docker_client.api.containers(all=True, filters=flt)
        assert sorted(x["Id"] for x in mine) == sorted(x["Id"] for x in theirs) and len(mine) == 2
        cid = mine[0]["Id"]
        assert c.api.inspect_container(cid)["State"]["Status"] == "running"
        assert c.info()["Name"] == docker_client.info()["Name"]

        obj = c.containers.get(cid)
        obj.stop(timeout=0)
        assert docker_client.containers.get(cid).status == "exited"
        c.api.start(cid)
        assert docker_client.containers.get(cid).status == "running"
        obj.remove(force=True)
        with pytest.raises(engine_http.NotFound):
            c.containers.get(cid)
        with pytest.raises(EngineError, match="404"):
            c.api.start(cid)
    finally:
        c.close()
        sh.compose_down(project)


@pytest.mark.docker
def test_unreachable_engine_is_one_clear_error(tmp_path):
    with pytest.raises(EngineError, match="cannot reach the Docker engine at unix://"):
        engine.connect(timeout=1, environ={"DOCKER_HOST": "unix://" + str(tmp_path / "no.sock")})


@pytest.mark.docker
def test_connect_builds_either_client_and_names_what_they_raise(tmp_path):
    """One door to the engine: the light client by default, the SDK's with sdk=True (at an explicit
    docker_host too); a missing container is in not_found() and in failures() for both."""
    sock = "unix:///var/run/docker.sock"
    light = engine.connect(docker_host=sock, timeout=10)
    heavy = engine.connect(docker_host=sock, timeout=10, sdk=True)
    try:
        assert isinstance(light, engine.Client) and not isinstance(heavy, engine.Client)
        assert heavy.info()["ID"] == light.info()["ID"]
        for c in (light, heavy):
            with pytest.raises(engine.not_found()) as e:
                c.api.inspect_container("medic-no-such-container-%s" % tmp_path.name)
            assert isinstance(e.value, engine.failures())
        assert not isinstance(ValueError("x"), engine.failures() + engine.not_found())
    finally:
        light.close()
        heavy.close()
    for sdk in (False, True):
        with pytest.raises(EngineError, match="cannot reach the Docker engine at unix://"):
            engine.connect(docker_host="unix://" + str(tmp_path / "no.sock"), timeout=1, sdk=sdk)


@pytest.mark.docker
def test_scaler_starts_an_exited_container_through_the_engine(docker_client, compose, demo_image, unique):
    project = "medicspeed%s" % unique
    c = engine.connect(timeout=10)
    sc = scaler.ComposeScaler(Scale("compose", project, sh.COMPOSE_FILE, "web"), 60, engine=c)
    try:
        sh.compose_up(project, 3)
        before = sorted(x.id for x in sh.containers(docker_client, project))
        victim = sh.running(docker_client, project)[0]
        subprocess.run(["docker", "kill", victim.id], check=True, capture_output=True)
        res = sc.scale(3)
        assert res.ok and res.argv[:2] == ["docker-engine", "start"] and res.argv[2:] == [victim.name], res
        assert len(sh.running(docker_client, project)) == 3
        assert sorted(x.id for x in sh.containers(docker_client, project)) == before  # nothing created

        # one more than there are: compose creates it (and the audit argv says compose ran)
        res = sc.scale(4)
        assert res.ok and res.argv[:2] == ["docker", "compose"] and "--scale" in res.argv, res
        assert len(sh.running(docker_client, project)) == 4
    finally:
        c.close()
        sh.compose_down(project)


def test_engine_module_imports_no_sdk():
    code = "import sys, consul_medic.handlers.engine.engine, consul_medic.handlers.engine.scaler; print(sorted(m for m in ('docker', 'requests', " \
           "'urllib3', 'http.client') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
