"""Great Expectations for the pipeline: the suites in code (`suites`), the per-night store and
gate (`store`), the Spark-side derived columns (`spark_frames`) and the scored
recommendations' checks (`recommendations`)."""
