"""Drop-in parser plugins: name one in loglines.cfg by its module name (plugin = example_status)."""
