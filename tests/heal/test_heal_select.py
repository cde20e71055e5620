"""Which services a payload names (handlers/heal/heal_select.py) and the keyprefix parser
(watches/keyprefix.py): pure, literal data."""
import base64
import json

import pytest

from consul_medic.handlers.heal.heal_select import from_bytes
from consul_medic.handlers.core.errors import PayloadError
from consul_medic.watches import keyprefix


def check(cid, service, status="critical", sid=None):
    return {"Node": "monitor", "CheckID": cid, "Name": cid, "Status": status, "ServiceID": sid or service,
            "ServiceName": service}


def test_count_check_names_the_service_it_counts():
    sel = from_bytes(json.dumps([check("medic:www.example.com", "medic"), check("medic:reconcile", "medic"),
                                 check("service:web-1", "api.example.com")]), None)
    assert sel.names == ("api.example.com", "www.example.com") and not sel.all_


def test_batch_count_check_means_every_spec_and_a_node_check_too():
    assert from_bytes(json.dumps([check("medic:batch", "medic")]), None).all_
    assert from_bytes(json.dumps([check("serfHealth", "", sid="")]), None).all_
    assert not from_bytes(json.dumps([check("serfHealth", "", "passing", sid="")]), None).all_


def test_service_and_empty_payloads():
    entry = {"Node": {"Node": "n"}, "Service": {"ID": "w1", "Service": "www"}, "Checks": []}
    assert from_bytes(json.dumps([entry]), None).names == ("www",)
    assert from_bytes(b"[]", None).names == ()


def kv(key, value, index):
    return {"Key": key, "CreateIndex": 1, "ModifyIndex": index, "LockIndex": 0, "Flags": 0, "Session": "",
            "Value": None if value is None else base64.b64encode(value.encode()).decode()}


def test_keyprefix_wake_keys_name_services_with_their_index():
    doc = [kv("medic/live/wake/www.example.com", '{"at": 1}', 42), kv("medic/live/wake/api", None, 7),
           kv("medic/live/wake/nested/x", "{}", 9), kv("medic/test/wake/other", "{}", 5)]
    sel = from_bytes(json.dumps(doc), "live")
    assert sel.kind == "keyprefix" and sel.names == ("api", "www.example.com")
    assert sel.wake == {"www.example.com": 42, "api": 7}
    assert from_bytes(b"null", "live").names == ()


@pytest.mark.parametrize("doc, msg", [({"Key": "x"}, "a watch payload is a list"),
                                      ([{"Key": 5}], "$[0].Key: expected a string"),
                                      ([{"Key": "k", "Value": "%%%"}], "$[0].Value: not base64")])
def test_keyprefix_bad_payloads(doc, msg):
    with pytest.raises(PayloadError, match=msg.replace("[", r"\[").replace("]", r"\]").replace("$", r"\$")):
        from_bytes(json.dumps(doc), None)


def test_keyprefix_parser():
    (e,) = keyprefix.parse(json.dumps([kv("a/b", "hi", 3)]))
    assert e == keyprefix.Entry("a/b", b"hi", 3)
