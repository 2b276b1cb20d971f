"""Several server nodes sharing state through Redis (coredis, native under trio).

Work in progress (step 6): the shared replay window, presence (listing, lookups, newest
connection wins across nodes) and commands through any node are here; shared command
records and ``--workers`` follow.
"""

from .presence import RedisRegistry, agent_info_from_json
from .replay import RedisReplayWindow
from .routing import NodeRouter

__all__ = ["NodeRouter", "RedisRegistry", "RedisReplayWindow", "agent_info_from_json"]
