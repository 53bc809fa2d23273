"""Getting the data back: events, analytics and COUNTER reports from Elasticsearch.

The ``api`` worker (:mod:`pipeline.query.api`) serves them over HTTP; ``loglines query`` and
``loglines report`` run the same code from the shell.
"""
