#!/usr/bin/env python3
"""Write supervisord.conf and workers_available/*.conf from loglines.cfg.

The same code as ``loglines supervisord-config``; kept under its original name.
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "supervisord-config"]))
