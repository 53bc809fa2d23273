"""Small converters for configuration values.

Each takes the raw string and returns the typed value, or raises ``ValueError`` whose message
says what was expected; the config loader adds file, section, key and value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected a boolean: yes/no, true/false, on/off or 1/0")


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"expected a whole number <= {maximum}")
        return value

    return convert


def number(minimum: float | None = None) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("expected a number") from None
        if value != value or (minimum is not None and value < minimum):
            raise ValueError(f"expected a number >= {minimum}")
        return value

    return convert


def byte_size(text: str) -> int:
    """``65536``, ``64k``, ``1MiB``, ``2g`` -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("expected a size in bytes such as 65536, 64k or 1MiB")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def name(text: str) -> str:
    """A queue or worker name: letters, digits, ``_ . -``."""
    value = text.strip()
    if not _NAME.match(value):
        raise ValueError("expected a name of letters, digits, '_', '.' or '-'")
    return value


def name_list(text: str) -> tuple[str, ...]:
    """A comma (or space) separated list of names, at least one."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ValueError("expected a comma-separated list of names")
    return tuple(name(p) for p in parts)


def string_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def choice(*allowed: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("expected one of: " + ", ".join(allowed))
        return value

    return convert


def nonempty(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def port(text: str) -> int:
    return integer(0, 65535)(text)


def host_port(text: str) -> tuple[str, int]:
    """supervisord's ``port`` forms: ``9001``, ``127.0.0.1:9001``, ``:9001`` -> (host or "", port)."""
    value = text.strip()
    host, sep, number = value.rpartition(":")
    if not sep:
        number = value
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not number.strip().isdigit():
        raise ValueError("expected a port (9001), host:port (127.0.0.1:9001) or :port")
    return host, integer(1, 65535)(number)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console_port(text: str) -> int:
    """The port of supervisord's ``port`` forms (the host part is checked by the loader)."""
    return host_port(text)[1]


def redis_url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")):
        raise ValueError("expected a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL")
    return value


def http_url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("expected an http:// or https:// URL")
    return value


def listen_address(text: str) -> str:
    """``host:port`` (``[::1]:port`` for IPv6) to listen on."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected host:port such as 127.0.0.1:8514")
    return value
