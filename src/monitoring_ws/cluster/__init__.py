"""Several server nodes sharing state through Redis (coredis, native under trio).

Work in progress (step 6): the shared replay window is here; presence, routing between
nodes and shared command records follow.
"""

from .replay import RedisReplayWindow

__all__ = ["RedisReplayWindow"]
