"""What the pipeline is doing: status."""
