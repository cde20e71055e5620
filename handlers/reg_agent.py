"""The local Consul agent as medic-register uses it, through one lighthttp connection."""
from . import keys
from .reg_roles import parse_role


class Agent:
    """The local Consul agent, through one lighthttp connection (not thread-safe)."""

    def __init__(self, settings, env):
        from .lighthttp import Connection
        self.conn = Connection(settings)
        self.prefix = keys.key(env, "roles") + "/"

    def services(self):
        return self.conn.get_json("/v1/agent/services")[1] or {}

    def checks(self):
        return self.conn.get_json("/v1/agent/checks")[1] or {}

    def roles(self):
        """{service id: role} from KV; malformed records are returned as errors, not raised."""
        resp = self.conn.call("GET", "/v1/kv/" + self.prefix, [("recurse", None)], ok=(200, 403, 404))
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

    def register(self, body, replace_checks=True):
        params = [("replace-existing-checks", "true")] if replace_checks else None
        self.conn.call("PUT", "/v1/agent/service/register", params, body)

    def deregister(self, service_id):
        from urllib.parse import quote
        self.conn.call("PUT", "/v1/agent/service/deregister/" + quote(service_id, safe=":@"), ok=(200, 404))

    def close(self):
        self.conn.close()
