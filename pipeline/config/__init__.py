"""``loglines.cfg`` read once into frozen objects: the loader, each worker type's options, the value converters, the starter file."""

from pipeline.config.loader import (
    DEFAULT_PATH,
    UNIX_SOCKET_MAX,
    Config,
    ProgramConfig,
    RedisConfig,
    SupervisorConfig,
    load,
)

__all__ = ["DEFAULT_PATH", "UNIX_SOCKET_MAX", "Config", "ProgramConfig", "RedisConfig", "SupervisorConfig", "load"]
