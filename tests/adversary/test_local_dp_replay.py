"""A coordinator that replays a site's local DP-SGD to learn whether one record was in its data.

The coordinator knows everything fedops sends or publishes: the run seed (it
sets it), the round, the site's index, the site's code (open source), the
model it sent, and, for the attack, the site's data D up to one record. If the
site's batch masks and noise came from that knowledge, the coordinator would
replay training on D and on the neighbour D' (the record removed) and see
which replay equals the update bit for bit: ε = ∞ against it, whatever the
site's ledger says. The site's randomness comes from OS entropy instead, so
the update matches neither replay; the control shows the same replay
reproduces the site's code exactly once the noise seed is known, so the
attack fails for that reason alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fedops.core.params import Params, digest
from fedops.core.privacy.local import LocalDP, steps_per_round, train_private
from fedops.core.training import TrainConfig, as_tensors, get_params, set_params
from fedops.tasks import load_task
from fedops.tasks.ledger import SiteLedger, Spent
from fedops.tasks.site import Site, shuffle_seed

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.1)
RUN_SEED, ROUND, SITE = 0, 3, 1
CONFIG = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5, "seed": 0.0}


pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step


def replay(
    model: nn.Module,
    params: Params,
    data: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    *,
    secure_mode: bool,
) -> Params:
    """The coordinator's copy of the site's DP-SGD loop, with the randomness it can derive.

    ``secure_mode=False`` is the loop as fedops ran it before (plain Gaussian draws),
    ``True`` as it runs now; both seed one generator for masks and noise.
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    set_params(model, params)
    x, y = data
    n = len(x)
    q, steps = steps_per_round(n, TRAIN)
    generator = torch.Generator().manual_seed(seed)
    wrapped = GradSampleModule(model)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.SGD(trainable, lr=TRAIN.lr, momentum=TRAIN.momentum),
        noise_multiplier=CONFIG["dp_noise_multiplier"],
        max_grad_norm=CONFIG["dp_max_grad_norm"],
        expected_batch_size=max(1, round(q * n)),
        generator=generator,
        secure_mode=secure_mode,
    )
    loss_fn = nn.CrossEntropyLoss()
    wrapped.train()
    try:
        for _ in range(steps):
            mask = torch.rand(n, generator=generator) < q
            opt.zero_grad(set_to_none=True)
            if not bool(mask.any()):
                for p in trainable:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                opt.step()
                continue
            loss_fn(wrapped(x[mask]), y[mask]).backward()
            opt.step()
    finally:
        wrapped._close()
    return get_params(model)


def test_the_coordinator_cannot_replay_a_sites_dp_sgd(tmp_path: Path):
    task = load_task("digits")
    site = Site(task, site=SITE, num_sites=3, train_config=TRAIN, ledger_dir=tmp_path)
    sent = site.initial_params()  # the model the coordinator sends this round
    x, y = as_tensors(site.train_data)  # type: ignore[misc]
    with_record, without = (x, y), (x[1:], y[1:])  # D and its neighbour D'
    seed = shuffle_seed(RUN_SEED, ROUND, SITE)  # all public to the coordinator

    # control: knowing the noise seed, the replay is the site's code, bit for bit
    attacker = task.build_model()
    dp = LocalDP(noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=seed)
    model = task.build_model()
    set_params(model, sent)
    train_private(model, with_record, TRAIN, dp)
    assert digest(get_params(model)) == digest(
        replay(attacker, sent, with_record, seed, secure_mode=True)
    )

    replays = {
        (which, secure): digest(replay(attacker, sent, data, seed, secure_mode=secure))
        for which, data in (("D", with_record), ("D'", without))
        for secure in (False, True)
    }
    assert replays[("D", True)] != replays[("D'", True)]  # the attack could tell D from D'

    charged: list[Spent] = []
    site.on_spend = charged.append  # the site's own audit log (nothing of it is sent)
    update, _, _ = site.fit(sent, ROUND, CONFIG, run_id="run")
    assert digest(update) not in set(replays.values())

    # asked for the same round again: fresh noise, and the ledger pays for both
    again, _, _ = site.fit(sent, ROUND, CONFIG, run_id="run")
    assert digest(again) != digest(update)
    charges = SiteLedger(tmp_path).charges()
    assert [(c.run_id, c.server_round) for c in charges] == [("run", ROUND)] * 2
    assert charged[1].epsilon > charged[0].epsilon
    assert charged[1].epsilon == pytest.approx(SiteLedger(tmp_path).epsilon(1e-5), rel=1e-12)
