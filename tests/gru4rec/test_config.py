import json

import pytest

from gru4rec.config import PARAM_SETS, Config
from gru4rec.errors import ConfigError

# The official best parameter files, as tabulated in GRU4REC_REFERENCE.md.
TABLE = {
    "rsc15": ("cross-entropy", 0.0, 100, 32, 0.0, 0.4, 0.2, 0.2, 0.5, 0.0, 1.0),
    "yoochoose": ("cross-entropy", 0.0, 480, 48, 0.0, 0.2, 0.07, 0.0, 0.2, 0.0, 1.0),
    "rees46": ("cross-entropy", 0.0, 512, 240, 0.45, 0.0, 0.065, 0.0, 0.5, 0.0, 1.0),
    "coveo": ("bpr-max", 1.0, 512, 144, 0.35, 0.0, 0.05, 0.4, 0.2, 1.85, 0.0),
    "retailrocket": ("bpr-max", 0.5, 224, 80, 0.5, 0.05, 0.05, 0.4, 0.4, 1.95, 0.0),
    "diginetica": ("bpr-max", 1.0, 512, 128, 0.5, 0.3, 0.05, 0.15, 0.3, 0.9, 0.0),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_param_sets_match_the_reference_table(name):
    c = Config.from_params(name)
    loss, elu, units, batch, pe, ph, lr, mom, alpha, bpreg, logq = TABLE[name]
    assert (c.loss, c.elu_param, c.layers, c.batch_size) == (loss, elu, (units,), batch)
    assert (c.dropout_p_embed, c.dropout_p_hidden) == (pe, ph)
    assert (c.learning_rate, c.momentum, c.sample_alpha, c.bpreg, c.logq) == (
        lr,
        mom,
        alpha,
        bpreg,
        logq,
    )
    assert c.embedding == "shared" and c.n_sample == 2048 and c.n_epochs == 10
    assert c.sample_store_size == 10_000_000


def test_all_six_published_sets_exist():
    assert set(PARAM_SETS) == set(TABLE)


def test_unknown_parameter_fails_with_suggestion():
    with pytest.raises(ConfigError, match="unknown parameter 'learnig_rate'.*learning_rate"):
        Config.from_dict({"learnig_rate": 0.1})


def test_unknown_loss_and_bad_values_fail_at_construction():
    with pytest.raises(ConfigError, match="loss: expected one of cross-entropy"):
        Config(loss="hinge")
    with pytest.raises(ConfigError, match="dropout_p_hidden: expected a drop probability"):
        Config(dropout_p_hidden=1.0)
    with pytest.raises(ConfigError, match="logq: expected 0 unless loss='cross-entropy'"):
        Config(loss="bpr-max", logq=1.0)
    with pytest.raises(ConfigError, match="unknown parameter set 'rsc16'"):
        Config.from_params("rsc16")
    with pytest.raises(ConfigError, match="batch_size: expected a value of type int"):
        Config.from_dict({"batch_size": "many"})


def test_config_is_frozen():
    c = Config()
    with pytest.raises(AttributeError):
        c.batch_size = 3


def test_overrides_from_command_line_and_file(tmp_path):
    c = Config.from_params("retailrocket").with_overrides(
        ["n_epochs=3", "layers=64,32", "loss=top1-max", "momentum=0"]
    )
    assert c.n_epochs == 3 and c.layers == (64, 32) and c.loss == "top1-max"
    assert c.batch_size == 80  # untouched values keep the named set's
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"batch_size": 16, "loss": "xe", "elu_param": 0, "bpreg": 0}))
    c2 = c.with_file(f)
    assert c2.batch_size == 16 and c2.loss == "cross-entropy"
    assert Config.from_dict(c2.to_dict()) == c2
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        c.with_overrides(["n_epochs"])
