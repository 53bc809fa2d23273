"""Test helpers: real servers, worker processes, the fault-injection harness."""
