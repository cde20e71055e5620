"""The local Consul agent as medic-register uses it, through one lighthttp connection.

Failures are told apart: `Refused` (a ConsulError) when the agent answers 4xx to one
request (HTTP 400 invalid registration, 403 ACL, ...): that request is at fault and is
retried on its own schedule while the rest goes on. Anything else (connection refused,
timeout, 5xx, 429) is a plain ConsulError: Consul is down, everything pending is kept.
"""
import json
from ..consul import api

from ..core import keys
from ..core.errors import ConsulError
from ..catalog.reg_roles import parse_role


class Refused(ConsulError):
    """Consul refused this one request (HTTP 4xx other than 429)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class Agent:
    """The local Consul agent, through one lighthttp connection (not thread-safe)."""

    def __init__(self, settings, env):
        from ..consul.lighthttp import Connection
        self.conn = Connection(settings)
        self.prefix = keys.key(env, "roles") + "/"
        self.env = env

    def services(self):
        return self.conn.get_json(api.AGENT_SERVICES)[1] or {}

    def version(self):
        """The agent's Consul version ('1.8.7'), or None when it does not say."""
        try:
            doc = self.conn.get_json(api.AGENT_SELF)[1] or {}
            return str((doc.get("Config") or {}).get("Version") or "") or None
        except (ConsulError, AttributeError):
            return None

    def checks(self):
        return self.conn.get_json(api.AGENT_CHECKS)[1] or {}

    def roles(self):
        """{service id: role} from KV; malformed records are returned as errors, not raised."""
        resp = self.conn.call("GET", api.kv(self.prefix), [("recurse", None)], ok=(200, 403, 404))
        if resp.status == 404:
            return {}, []
        if resp.status == 403:  # a token without key:read: register anyway, say so
            return {}, [(self.prefix, "permission denied (ACL): role tags not applied")]
        roles, bad = {}, []
        import base64
        for e in resp.json() or ():
            sid = e["Key"][len(self.prefix):]
            if not sid or "/" in sid:
                continue
            try:
                roles[sid] = parse_role(base64.b64decode(e.get("Value") or b"") or b"{}")
            except ValueError as ex:
                bad.append((e["Key"], str(ex)))
        return roles, bad

    def _write(self, method, path, params=None, body=None, ok=(200,)):
        resp = self.conn.request(method, path, params, body)
        if resp.status in ok:
            return resp
        text = resp.body[:300].decode("utf-8", "replace").strip().splitlines()
        detail = self.conn.settings.redact(text[0] if text else "")
        what = {403: "permission denied (ACL)"}.get(resp.status, "HTTP %d" % resp.status)
        msg = "Consul %s %s: %s%s" % (method, path.split("?")[0], what, ": " + detail if detail else "")
        if 400 <= resp.status < 500 and resp.status != 429:
            raise Refused(msg, resp.status)
        raise ConsulError(msg)

    def register(self, body, replace_checks=True):
        params = [("replace-existing-checks", "true")] if replace_checks else None
        self._write("PUT", api.AGENT_REGISTER, params, body)

    def deregister(self, service_id):
        self._write("PUT", api.agent_deregister(service_id), ok=(200, 404))

    def fail_check(self, check_id, output):
        """Set a TTL check critical with `output` (the refusal check says why)."""
        self._write("PUT", api.check_update(check_id),
                    body={"Status": "critical", "Output": output})

    def put_wake(self, service, record):
        """The wake-up key medic/<env>/wake/<service> (medic-heal's keyprefix watch looks again)."""
        key = keys.key(self.env, "wake", service)
        self._write("PUT", api.kv(key), body=json.dumps(record, sort_keys=True).encode())
        return key

    def close(self):
        self.conn.close()
