"""Old home of the Redis client, kept for imports not yet moved to core.redis_client."""

from core.redis_client import get_redis

__all__ = ["get_redis"]
