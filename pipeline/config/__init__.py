"""``loglines.cfg`` read once into frozen objects: the model, the loader, how keys are declared,
the value converters, the starter file."""

from pipeline.config.loader import DEFAULT_PATH, UNIX_SOCKET_MAX, load
from pipeline.config.model import Config, ProgramConfig, RedisConfig, SupervisorConfig

__all__ = ["DEFAULT_PATH", "UNIX_SOCKET_MAX", "Config", "ProgramConfig", "RedisConfig",
           "SupervisorConfig", "load"]
