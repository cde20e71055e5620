"""Old names of medic-notify's pure core, kept so code written against them still runs.

The rules live in `handlers.notify_rules` (AlertState, Verdict, judge, policy) and the
messages in `handlers.notify_message`. `Observation`, `Decision` and `decide` were
renamed so they no longer read like medic-heal's (handlers.decide). New code: import
the new modules; this one only re-exports.
"""
from .notify_message import (SHORT_MAX, default_action, document, dumps, env_vars, message,  # noqa: F401
                             short_text)
from .notify_rules import (CHECK_PREFIX, DEFAULT_POLICY, HEAL_KINDS, HEAL_SLOT, KINDS, STATES,  # noqa: F401
                           AlertState, Policy, Verdict, channel_wants, judge, observe_checks,
                           observe_event, parse_output, policy)

Observation = AlertState
Decision = Verdict
decide = judge
