"""GRU4Rec (Hidasi et al.) for the pipeline: training, evaluation, baselines, checkpoints.

See GRU4REC_REFERENCE.md for the behaviour reproduced here and `python -m gru4rec --help`.
"""
