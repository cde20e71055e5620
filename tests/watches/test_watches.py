"""Payload parsers: typed objects from real-shaped payloads, one-line errors otherwise."""
import io
import json

import pytest

from consul_medic.handlers.core.errors import PayloadError
from consul_medic.watches import checks, service
from consul_medic.watches._common import read_stream

CHECK = {"Node": "n1", "CheckID": "service:web-1", "Name": "Service 'www' check", "Status": "critical",
         "Notes": "", "Output": "HTTP GET: 503", "ServiceID": "web-1", "ServiceName": "www.example.com",
         "ServiceTags": ["demo"], "Type": "http", "CreateIndex": 10, "ModifyIndex": 42}
ENTRY = {"Node": {"ID": "x", "Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
         "Service": {"ID": "web-1", "Service": "www.example.com", "Tags": ["demo"], "Address": "127.0.0.1",
                     "Port": 32768, "Meta": {"medic_container_id": "abc"}},
         "Checks": [dict(CHECK, Status="passing")]}


def test_checks_payload():
    (c,) = checks.parse(json.dumps([CHECK]))
    assert (c.node, c.check_id, c.status, c.service_name, c.service_tags, c.modify_index) == \
        ("n1", "service:web-1", "critical", "www.example.com", ("demo",), 42)
    node_check = dict(CHECK, ServiceID="", ServiceName="", CheckID="serfHealth")
    assert checks.service_names(checks.parse(json.dumps([CHECK, node_check]))) == ("www.example.com",)


def test_service_payload():
    (e,) = service.parse(json.dumps([ENTRY]))
    assert (e.node, e.service_id, e.port, e.meta) == ("n1", "web-1", 32768, (("medic_container_id", "abc"),))
    assert e.checks[0].status == "passing"
    assert service.parse("[]") == ()


@pytest.mark.parametrize("payload, msg", [
    ("", "payload is empty"),
    ("   \n", "payload is empty"),
    ("{", "payload is not JSON"),
    (b"\xff\xfe", "payload is not UTF-8"),
    ('{"a": 1}', "$: a checks watch payload is a list, got dict"),
    ("[1]", "$[0]: expected an object"),
    (json.dumps([dict(CHECK, Status="sad")]), "$[0].Status: unknown status 'sad'"),
    (json.dumps([dict(CHECK, Status=None)]), "$[0].Status: missing"),
    (json.dumps([dict(CHECK, ServiceTags=[1])]), "$[0].ServiceTags[0]: expected a string"),
    (json.dumps([dict(CHECK, ModifyIndex=True)]), "$[0].ModifyIndex: expected an integer, got bool"),
])
def test_bad_checks_payload(payload, msg):
    with pytest.raises(PayloadError) as e:
        checks.parse(payload)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_bad_service_payload_names_nested_path():
    bad = dict(ENTRY, Checks=[dict(CHECK, Status=3)])
    with pytest.raises(PayloadError, match=r"\$\[0\]\.Checks\[0\]\.Status: expected a string"):
        service.parse(json.dumps([bad]))
    with pytest.raises(PayloadError, match=r"\$\[0\]\.Service\.Port: expected an integer"):
        service.parse(json.dumps([dict(ENTRY, Service=dict(ENTRY["Service"], Port="80"))]))



def test_read_stream_limit():
    assert read_stream(io.BytesIO(b"x" * 10), limit=10) == b"x" * 10
    with pytest.raises(PayloadError, match="larger than 10 bytes"):
        read_stream(io.BytesIO(b"x" * 11), limit=10)
