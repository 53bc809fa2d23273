"""Workers between queues: the plugin-driven parser, the broker, and the COUNTER robots list the plugins filter with."""
