"""Running the pipeline: supervisord generation and control, dead letters, Elasticsearch operations, scheduled tasks."""
