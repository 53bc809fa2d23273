"""loglines: tail access logs, parse them with plugins, deliver them through Redis exactly once."""

__version__ = "0.1.0"
