"""One frozen, validated configuration for GRU4Rec, with the published parameter sets.

Every field has the meaning it has in the GRU4Rec papers and GRU4REC_REFERENCE.md. Unknown
names and invalid values fail at construction with a message that says what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gru4rec.errors import ConfigError

LOSSES = ("cross-entropy", "bpr-max", "top1-max", "top1", "bpr")
LOSS_ALIASES = {"xe": "cross-entropy", "ce": "cross-entropy", "cross_entropy": "cross-entropy"}
EMBEDDINGS = ("shared", "separate", "onehot")
TIE_MODES = ("conservative", "standard", "median")
AUTO_DEVICE = "auto"  # a CUDA GPU when torch sees one, else the CPU
DEVICES = (AUTO_DEVICE, "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Config:
    """GRU4Rec hyper-parameters (defaults: the `rsc15` set) and run settings."""

    layers: tuple[int, ...] = (100,)
    # "shared" (a.k.a. constrained): the output matrix Wy is also the input embedding.
    # "separate": an item embedding of width `embedding_dim`. "onehot": layer 0 indexed by item.
    embedding: str = "shared"
    embedding_dim: int = 0
    loss: str = "cross-entropy"
    # Final activation for the ranking losses: ELU with this parameter; 0 means linear.
    # Cross-entropy always uses softmax (inside the loss).
    elu_param: float = 0.0
    batch_size: int = 32
    dropout_p_embed: float = 0.0
    dropout_p_hidden: float = 0.4
    learning_rate: float = 0.2
    momentum: float = 0.2
    n_sample: int = 2048
    sample_alpha: float = 0.5
    sample_store_size: int = 10_000_000
    bpreg: float = 0.0
    logq: float = 1.0
    n_epochs: int = 10
    seed: int = 42
    device: str = AUTO_DEVICE

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            found = getattr(self, name)
            raise ConfigError(f"{name}: expected {expected}, found {found!r}")

        layers = self.layers
        if isinstance(layers, int):
            layers = (layers,)
        try:
            layers = tuple(int(x) for x in layers)
        except (TypeError, ValueError):
            fail("layers", "a list of positive integers")
        if not layers or any(x <= 0 for x in layers):
            fail("layers", "a non-empty list of positive integers")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "loss", LOSS_ALIASES.get(self.loss, self.loss))
        if self.loss not in LOSSES:
            fail("loss", f"one of {', '.join(LOSSES)}")
        if self.embedding not in EMBEDDINGS:
            fail("embedding", f"one of {', '.join(EMBEDDINGS)}")
        if self.embedding == "separate" and self.embedding_dim <= 0:
            fail("embedding_dim", "a positive width when embedding='separate'")
        if self.embedding != "separate" and self.embedding_dim != 0:
            fail("embedding_dim", "0 unless embedding='separate'")
        if self.batch_size <= 0:
            fail("batch_size", "a positive integer")
        for name in ("dropout_p_embed", "dropout_p_hidden"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "a drop probability in [0, 1)")
        if self.learning_rate <= 0:
            fail("learning_rate", "a positive number")
        if not 0.0 <= self.momentum < 1.0:
            fail("momentum", "a number in [0, 1)")
        if self.n_sample < 0:
            fail("n_sample", "an integer >= 0")
        if self.sample_alpha < 0:
            fail("sample_alpha", "a number >= 0 (0 uniform, 1 popularity)")
        if self.n_sample > 0 and self.sample_store_size < self.n_sample:
            fail("sample_store_size", f"at least n_sample ({self.n_sample})")
        if self.bpreg < 0:
            fail("bpreg", "a number >= 0")
        if self.logq < 0:
            fail("logq", "a number >= 0")
        if self.logq > 0 and self.loss != "cross-entropy":
            fail("logq", "0 unless loss='cross-entropy' (logQ corrects the softmax only)")
        if self.elu_param < 0:
            fail("elu_param", "a number >= 0 (0 = linear)")
        if self.elu_param > 0 and self.loss == "cross-entropy":
            fail("elu_param", "0 with cross-entropy (its final activation is softmax)")
        if self.n_epochs <= 0:
            fail("n_epochs", "a positive integer")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            fail("device", f"one of {', '.join(DEVICES)} or cuda:N")

    # -- construction helpers --------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: Config | None = None) -> Config:
        """`base` (default: the defaults) with `values` replaced; unknown names are refused."""
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"unknown parameter {', '.join(hints)}; expected one of {', '.join(names)}"
            )
        typed = {k: _coerce(k, v) for k, v in values.items()}
        return dataclasses.replace(base or cls(), **typed)

    @classmethod
    def from_params(cls, name: str) -> Config:
        if name not in PARAM_SETS:
            raise ConfigError(
                f"unknown parameter set {name!r}; expected one of {', '.join(PARAM_SETS)}"
            )
        return cls.from_dict(PARAM_SETS[name])

    def with_overrides(self, items: Iterable[str]) -> Config:
        """Apply KEY=VALUE strings (command line): values are parsed as JSON, else strings."""
        values: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"expected KEY=VALUE, found {item!r}")
            values[key.strip()] = _parse_value(raw.strip())
        return Config.from_dict(values, base=self)

    def with_file(self, path: str | Path) -> Config:
        """Apply a JSON object file of parameters."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {path}: expected a JSON object ({exc})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: expected a JSON object, found {values!r}")
        return Config.from_dict(values, base=self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d


_TYPES = {f.name: f.type for f in dataclasses.fields(Config)}


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw or raw.isdigit():
            return [json.loads(x) for x in raw.split(",")]
        return raw


def _coerce(name: str, value: Any) -> Any:
    kind = _TYPES[name]
    try:
        if kind == "int" and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float" and not isinstance(value, bool):
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if name == "layers":
            if isinstance(value, int | str):
                value = [value]
            return tuple(int(x) for x in value)
    except (TypeError, ValueError):
        pass
    else:
        if kind not in ("int", "float"):
            return value
    raise ConfigError(f"{name}: expected a value of type {kind}, found {value!r}")


# The official best parameter files (GRU4REC_REFERENCE.md): shared embedding, 2048 samples.
PARAM_SETS: dict[str, dict[str, Any]] = {
    "rsc15": dict(
        loss="cross-entropy",
        layers=[100],
        batch_size=32,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.4,
        learning_rate=0.2,
        momentum=0.2,
        sample_alpha=0.5,
        logq=1.0,
    ),
    "yoochoose": dict(
        loss="cross-entropy",
        layers=[480],
        batch_size=48,
        dropout_p_embed=0.0,
        dropout_p_hidden=0.2,
        learning_rate=0.07,
        momentum=0.0,
        sample_alpha=0.2,
        logq=1.0,
    ),
    "rees46": dict(
        loss="cross-entropy",
        layers=[512],
        batch_size=240,
        dropout_p_embed=0.45,
        dropout_p_hidden=0.0,
        learning_rate=0.065,
        momentum=0.0,
        sample_alpha=0.5,
        logq=1.0,
    ),
    "coveo": dict(
        loss="bpr-max",
        elu_param=1.0,
        layers=[512],
        batch_size=144,
        dropout_p_embed=0.35,
        dropout_p_hidden=0.0,
        learning_rate=0.05,
        momentum=0.4,
        sample_alpha=0.2,
        bpreg=1.85,
        logq=0.0,
    ),
    "retailrocket": dict(
        loss="bpr-max",
        elu_param=0.5,
        layers=[224],
        batch_size=80,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.05,
        learning_rate=0.05,
        momentum=0.4,
        sample_alpha=0.4,
        bpreg=1.95,
        logq=0.0,
    ),
    "diginetica": dict(
        loss="bpr-max",
        elu_param=1.0,
        layers=[512],
        batch_size=128,
        dropout_p_embed=0.5,
        dropout_p_hidden=0.3,
        learning_rate=0.05,
        momentum=0.15,
        sample_alpha=0.3,
        bpreg=0.9,
        logq=0.0,
    ),
}
