"""Shared plumbing for the Spark jobs: session factory, lake paths, atomic publish, summaries."""
