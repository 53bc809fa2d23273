"""The exception tree of loglines.

    LoglinesError
    ├── ConfigError            a bad loglines.cfg: stops start-up, never retried
    ├── PluginError            a plugin that cannot be loaded or does not fit the contract
    ├── PayloadError           a queue message that cannot be decoded (dead-lettered)
    └── DeliveryError          a sink could not deliver
        ├── RetryableError     try again later (connection lost, 429, 5xx, timeouts)
        └── PermanentError     trying again will not help (4xx, rejected document)

Sinks decide what to do by type, never by matching message strings.
"""

from __future__ import annotations


class LoglinesError(Exception):
    """Base of every error loglines raises on purpose."""


class ConfigError(LoglinesError):
    """A configuration value is missing, unknown or invalid.

    The message names the file, the section, the key, the value and what was expected.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        section: str | None = None,
        key: str | None = None,
        value: str | None = None,
    ) -> None:
        self.file, self.section, self.key, self.value = file, section, key, value
        where = []
        if file is not None:
            where.append(f"file {file!r}")
        if section is not None:
            where.append(f"section [{section}]")
        if key is not None:
            where.append(f"key {key!r}")
        if value is not None:
            where.append(f"value {value!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class PluginError(LoglinesError):
    """A plugin is missing, fails to import, or does not fit the plugin contract."""


class PayloadError(LoglinesError):
    """A queue message is not a JSON object or array of objects within the size cap."""


class DeliveryError(LoglinesError):
    """A sink could not deliver an item."""


class RetryableError(DeliveryError):
    """Delivery failed for a reason that may pass: retry with backoff, waiting at least
    ``retry_after`` seconds when the other side said so."""

    def __init__(self, message: str, retry_after: float = 0.0, uncertain: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: the request reached the other side and no answer came back (a read timeout, a
        #: connection cut after sending): it may have been done
        self.uncertain = uncertain


class PermanentError(DeliveryError):
    """Delivery failed for a reason retrying cannot fix: dead-letter the item."""
