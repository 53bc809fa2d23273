"""Where lines enter the pipeline: the file watcher (with its tail and file identity) and backfill."""
