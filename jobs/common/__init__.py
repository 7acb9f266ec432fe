"""Shared by every part of the pipeline: the lake layout, data contracts, settings, Hadoop file
system + staging + publish, errors, the CLI wrapper, the Spark session, time utilities."""
