"""Where records leave the pipeline: files, Elasticsearch, the COUNTER tracker."""
