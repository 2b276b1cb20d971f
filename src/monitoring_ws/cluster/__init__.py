"""Several server nodes sharing state through Redis (coredis, native under trio).

Work in progress (step 6): the shared replay window and presence (listing, lookups,
newest connection wins across nodes) are here; routing commands between nodes, shared
command records and ``--workers`` follow.
"""

from .presence import RedisRegistry, agent_info_from_json
from .replay import RedisReplayWindow

__all__ = ["RedisRegistry", "RedisReplayWindow", "agent_info_from_json"]
