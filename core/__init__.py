"""The base layer: log contracts, Parquet / JSON I/O, media references, the Spark session and Spark I/O, progress,
timelines, fault injection, machine info, and the metric math (metrics, bootstrap) every stage reports with.

It imports nothing else of the project; every other package builds on it.
"""
