"""GRU4Rec (Hidasi et al.) for the pipeline: training, evaluation, baselines, checkpoints.

See GRU4REC_REFERENCE.md for the behaviour reproduced here and `python -m gru4rec --help`.
"""

import os as _os

# Reproducible numbers: MKL (torch's CPU matrix products) may otherwise use fewer threads on a
# loaded machine, which changes float sums in the last bits, and a rerun of a night could
# rank two near-tied items the other way. Read when MKL loads, so set before torch is imported.
_os.environ.setdefault("MKL_DYNAMIC", "FALSE")
_os.environ.setdefault("OMP_DYNAMIC", "FALSE")
