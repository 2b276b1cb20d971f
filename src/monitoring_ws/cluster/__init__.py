"""Several server nodes sharing state through Redis (coredis, native under trio).

Presence (listing, lookups, newest connection wins across nodes), the shared replay
window, commands through any node, shared copies of command records, and the
``serve --workers N`` supervisor (docs/scaling.md).
"""

from .presence import RedisRegistry, agent_info_from_json
from .replay import RedisReplayWindow
from .routing import NodeRouter

__all__ = ["NodeRouter", "RedisRegistry", "RedisReplayWindow", "agent_info_from_json"]
