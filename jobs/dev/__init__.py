"""For trying the pipeline here: the demo, the embedded (SQLite) Airflow helper and the
synthetic clickstream generator."""
