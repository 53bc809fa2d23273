"""Built-in parser plugins, named in ``loglines.cfg`` by their short module names."""
