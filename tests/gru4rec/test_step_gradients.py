"""The hand-derived training step equals autograd on the reference formulas.

The oracle below re-implements one step from GRU4REC_REFERENCE.md with autograd (Cho GRU,
scores over target + sample columns, the loss from gru4rec.losses, which is tested against
hand-computed values), then applies the optimizer (tested against its formula). The trainer's
step must leave every weight where the oracle does.
"""

import copy

import numpy as np
import pytest
import torch

from gru4rec import losses
from gru4rec.config import Config
from gru4rec.data import ItemMap
from gru4rec.model import dropout_mask
from gru4rec.optim import AdagradM
from gru4rec.train import Trainer

N_ITEMS = 30


def oracle_step(model, opt, cfg, inp, target, sample, hidden, logq_t, logq_s):
    dense = model.dense.detach().clone().requires_grad_()
    w = model.dense_views(dense)
    cols = torch.cat([target, sample]) if sample is not None else target
    wy_all = model.sparse["Wy"].detach().clone().requires_grad_()
    by_all = model.sparse["By"].detach().clone().requires_grad_()
    emb_name = {"shared": "Wy", "separate": "E", "onehot": "Wx0"}[cfg.embedding]
    emb_all = wy_all if emb_name == "Wy" else model.sparse[emb_name].detach().clone()
    emb_all.requires_grad_()
    x = emb_all[inp]
    if cfg.dropout_p_embed > 0 and cfg.embedding != "onehot":
        x = x * dropout_mask(x, cfg.dropout_p_embed)
    for i, h_prev in enumerate(hidden):
        h = cfg.layers[i]
        onehot_input = i == 0 and cfg.embedding == "onehot"
        vx = x + w["b0"] if onehot_input else x @ w[f"Wx{i}"] + w[f"b{i}"]
        r = torch.sigmoid(vx[:, :h] + h_prev @ w[f"Wh_rz{i}"][:, :h])
        z = torch.sigmoid(vx[:, h : 2 * h] + h_prev @ w[f"Wh_rz{i}"][:, h:])
        c = torch.tanh(vx[:, 2 * h :] + (r * h_prev) @ w[f"Wh_c{i}"])
        out = z * h_prev + (1 - z) * c
        if cfg.dropout_p_hidden > 0:
            out = out * dropout_mask(out, cfg.dropout_p_hidden)
        x = out
    scores = x @ wy_all[cols].t() + by_all[cols].view(1, -1)
    shift = None
    if cfg.logq > 0:
        shift = (
            torch.cat([logq_t[target], logq_s[sample]]) if sample is not None else logq_t[target]
        )
    loss = (
        losses.compute(
            cfg.loss, scores, elu_param=cfg.elu_param, bpreg=cfg.bpreg, logq_shift=shift
        ).sum()
        / cfg.batch_size
    )
    loss.backward()
    opt.dense_step("dense", model.dense, dense.grad)
    touched = {"Wy": cols, "By": cols}
    touched[emb_name] = torch.cat([inp, cols]) if emb_name == "Wy" else inp
    for name, t in {"Wy": wy_all, "By": by_all, emb_name: emb_all}.items():
        rows = torch.unique(touched[name])
        g = t.grad.index_select(0, rows)
        opt.sparse_step(name, model.sparse[name], rows, g.view(len(rows), -1))
    return loss.item()


CASES = {
    "xe-logq-shared": dict(loss="cross-entropy", logq=1.0, dropout_p_hidden=0.3),
    "bpr-max-elu": dict(
        loss="bpr-max", elu_param=0.5, bpreg=1.5, logq=0.0, dropout_p_embed=0.4, momentum=0.4
    ),
    "bpr-max-linear": dict(loss="bpr-max", elu_param=0.0, bpreg=0.7, logq=0.0),
    "top1-max-separate": dict(
        loss="top1-max", logq=0.0, embedding="separate", embedding_dim=6, dropout_p_embed=0.2
    ),
    "xe-onehot-2-layers": dict(loss="cross-entropy", logq=0.5, embedding="onehot", layers=(8, 5)),
    "bpr-no-samples": dict(loss="bpr", logq=0.0, n_sample=0, momentum=0.0),
}


@pytest.fixture
def float64():
    """Compare in double precision: float32 round-off near ELU's kink flips single elements."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_matches_autograd_oracle(case, float64):
    base = dict(layers=(7,), batch_size=5, n_sample=9, sample_store_size=90, device="cpu",
                learning_rate=0.3, momentum=0.2, seed=3)  # fmt: skip
    cfg = Config.from_dict({**base, **CASES[case]})
    rng = np.random.default_rng(0)
    support = rng.integers(1, 50, size=N_ITEMS)
    item_map = ItemMap(np.array([f"i{k}" for k in range(N_ITEMS)], dtype=object), support)
    trainer = Trainer(cfg, item_map)
    with torch.no_grad():
        trainer.model.sparse["By"].normal_(0, 0.3)
        for t in trainer.model.sparse.values():
            t.mul_(5)  # larger scores: exercise non-trivial softmax weights and ELU branches
    model_ref = copy.deepcopy(trainer.model)
    opt_ref = AdagradM(cfg.learning_rate, cfg.momentum)
    for step in range(3):  # several steps: accumulators and velocities matter
        inp = torch.tensor(rng.integers(0, N_ITEMS, size=4))  # 4 rows: a shrunk batch
        inp[1] = inp[0]  # duplicate rows are summed
        target = torch.tensor(rng.integers(0, N_ITEMS, size=4))
        sample = torch.tensor(rng.integers(0, N_ITEMS, size=9)) if cfg.n_sample else None
        hidden = [torch.randn(4, h) * 0.5 for h in cfg.layers]
        torch.manual_seed(100 + step)
        loss, _ = trainer.step(inp, target, [h.clone() for h in hidden], sample)
        torch.manual_seed(100 + step)
        ref_loss = oracle_step(
            model_ref, opt_ref, cfg, inp, target, sample, hidden,
            trainer.logq_target, trainer.logq_sample,
        )  # fmt: skip
        assert loss.item() == pytest.approx(ref_loss, rel=1e-9)
    torch.testing.assert_close(trainer.model.dense, model_ref.dense, rtol=1e-9, atol=1e-10)
    for name in trainer.model.sparse:
        torch.testing.assert_close(
            trainer.model.sparse[name], model_ref.sparse[name], rtol=1e-9, atol=1e-10
        )
