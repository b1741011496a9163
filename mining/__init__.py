"""Pair mining: query -> item, item -> item and sequence pairs from the logs (Spark and Polars engines)."""
