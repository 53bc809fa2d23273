"""The machinery every worker shares: Redis keys, messages, the reliable queue, the reaper, connections, the worker loop, backoff, stats, crash points, logging."""
