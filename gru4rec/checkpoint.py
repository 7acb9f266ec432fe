"""Checkpoints: weights + optimizer state + config + item map + format version, one file.

Saved with torch.save and loaded with `torch.load(weights_only=True)`: only tensors, strings,
numbers, lists and dicts are read back, never arbitrary pickled objects. A checkpoint is
refused when its format version is unknown or when the item index of the data it is used
with differs from the one it was trained on.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from gru4rec.config import Config
from gru4rec.data import ItemMap
from gru4rec.errors import ConfigError, NoInputError, SchemaError
from gru4rec.model import GRU4RecModel
from gru4rec.optim import AdagradM

FORMAT = "gru4rec-checkpoint"
FORMAT_VERSION = 1
FILENAME = "model.pt"


class CheckpointError(SchemaError):
    """A checkpoint that cannot be used: unknown format, or a different item index."""


def save(
    path: str | Path,
    model: GRU4RecModel,
    item_map: ItemMap,
    optimizer: AdagradM | None = None,
    epochs_done: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write atomically: a temporary file in the same directory, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.cfg.to_dict()),
        "n_items": len(item_map),
        "item_fingerprint": item_map.fingerprint,
        "item_ids": [str(x) for x in item_map.ids],
        "item_support": torch.as_tensor(item_map.support, dtype=torch.int64),
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "epochs_done": int(epochs_done),
        "extra": json.dumps(extra or {}),
        "torch_version": str(torch.__version__),
    }
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Checkpoint:
    """A loaded checkpoint (safe load); build the model with `model(device)`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        if not path.exists():
            raise NoInputError(f"no checkpoint at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(
                f"{path}: expected a {FORMAT} file loadable with weights_only=True ({exc})"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{path}: expected a {FORMAT} file, found something else")
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: expected format version {FORMAT_VERSION}, found {version!r}"
            )
        self.path = path
        self.payload = payload
        self.config = Config.from_dict(json.loads(payload["config"]))
        self.item_map = ItemMap(
            np.asarray(payload["item_ids"], dtype=object), payload["item_support"].numpy()
        )
        if self.item_map.fingerprint != payload["item_fingerprint"]:
            raise CheckpointError(f"{path}: the stored item map does not match its fingerprint")
        self.epochs_done = int(payload["epochs_done"])
        self.extra = json.loads(payload["extra"])

    def check_items(self, item_map: ItemMap, what: str = "the data") -> None:
        if item_map.fingerprint != self.item_map.fingerprint:
            raise CheckpointError(
                f"{self.path} was trained on a different item index than {what}: expected "
                f"{len(self.item_map)} items with fingerprint {self.item_map.fingerprint}, "
                f"found {len(item_map)} items with fingerprint {item_map.fingerprint}"
            )

    def model(self, device: torch.device | str = "cpu", config: Config | None = None):
        cfg = config or self.config
        model = GRU4RecModel(cfg, len(self.item_map), device)
        try:
            model.load_state_dict(self.payload["weights"])
        except ValueError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        return model

    def optimizer(self, cfg: Config, device: torch.device) -> AdagradM:
        opt = AdagradM(cfg.learning_rate, cfg.momentum)
        opt.load_state_dict(self.payload["optimizer"], device)
        return opt
