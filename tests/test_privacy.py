"""Differential privacy's parts: the accountant against dp-accounting and the closed form,
calibration, settings refusals, what a site releases, and the ledger's check of ε."""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from test_contract import Driver

from openswarm.client.privacy import SgdSteps, SitePrivacy
from openswarm.privacy import (
    PrivacyBudget,
    PrivacyError,
    calibrate_sgd_noise,
    calibrate_site_noise,
    sgd_epsilon,
    site_epsilon,
)

ORDERS = rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS


def test_site_epsilon_equals_the_gaussian_closed_form_and_the_library() -> None:
    z, k, delta = 3.0, 20, 1e-5
    # RDP of the Gaussian mechanism is a/(2z²) per release at order a, composed additively;
    # the library converts RDP to (ε, δ) with the tighter bound of Canonne et al. 2020, so
    # the classic conversion a·k/(2z²) + log(1/δ)/(a-1) must bound it from above
    classic = min(k * a / (2 * z * z) + math.log(1 / delta) / (a - 1) for a in ORDERS)
    accountant = rdp.RdpAccountant(ORDERS)
    accountant.compose(dp_accounting.GaussianDpEvent(z), k)
    reference = accountant.get_epsilon(delta)
    assert site_epsilon(z, k, delta) == pytest.approx(reference, abs=1e-9)
    assert reference <= classic
    # the library's own conversion from the closed-form RDP curve
    curve = [k * a / (2 * z * z) for a in ORDERS]
    eps, _ = rdp.rdp_privacy_accountant.compute_epsilon(ORDERS, curve, delta)
    assert site_epsilon(z, k, delta) == pytest.approx(eps, abs=1e-9)
    assert site_epsilon(z, 0, delta) == 0.0
    assert site_epsilon(z, 2 * k, delta) > site_epsilon(z, k, delta)


def test_sgd_epsilon_equals_the_library_fed_the_same_events() -> None:
    z, q, steps, delta = 1.1, 0.01, 1000, 1e-5
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                       steps)  # fmt: skip
    assert sgd_epsilon(z, q, steps, delta) == pytest.approx(accountant.get_epsilon(delta), abs=1e-9)
    # subsampling amplifies: far below the same noise on every record at every step
    assert sgd_epsilon(z, q, steps, delta) < site_epsilon(z, steps, delta) / 10


def test_calibrated_noise_spends_the_target_and_no_more() -> None:
    for target in (1.0, 4.0, 8.0):
        z = calibrate_site_noise(target, 30, 1e-5)
        assert target - 0.01 < site_epsilon(z, 30, 1e-5) <= target
    z = calibrate_sgd_noise(4.0, 0.05, 100, 1e-5)
    assert 4.0 - 0.01 < sgd_epsilon(z, 0.05, 100, 1e-5) <= 4.0


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"mode": "local"}, "dp must be one of site, sgd"),
        ({"mode": "site", "noise": 1.0, "delta": 0.0}, "dp_delta must be in"),
        ({"mode": "site", "noise": 1.0, "delta": 1.0}, "dp_delta must be in"),
        ({"mode": "site", "noise": 0.0}, "dp_noise must be a finite number > 0"),
        ({"mode": "site", "noise": 1.0, "clip": -1}, "dp_clip must be a finite number > 0"),
        ({"mode": "site", "noise": 1.0, "epsilon": math.inf}, "dp_epsilon must be a finite"),
        ({"mode": "site"}, "needs dp_noise"),
    ],
)
def test_bad_privacy_settings_are_refused_with_the_cause(
    options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PrivacyError, match=reason):
        PrivacyBudget(**options)


def test_a_site_release_is_the_anchor_plus_a_clipped_update_plus_noise() -> None:
    anchor = {"w": np.zeros(20_000, np.float32), "count": np.array([7], np.int64)}
    privacy = SitePrivacy(PrivacyBudget("site", clip=0.5, noise=2.0, epsilon=100.0))
    privacy.loaded(anchor)
    trained = {"w": np.full(20_000, 3.0, np.float32), "count": np.array([9], np.int64)}
    assert privacy.may_release()
    out = privacy.release(trained)
    assert privacy.releases == 1 and out["count"][0] == 9 and out["w"].dtype == np.float32
    # the clipped update is 0.5/sqrt(n) per coordinate; the noise's std 2.0 * 0.5
    n = trained["w"].size
    assert float(out["w"].mean()) == pytest.approx(0.5 / math.sqrt(n), abs=0.03)
    assert float(out["w"].std()) == pytest.approx(1.0, rel=0.03)
    # fresh noise each time: never the same release twice
    assert not np.array_equal(out["w"], privacy.release(trained)["w"])
    record = privacy.record()
    assert record == {"epsilon": site_epsilon(2.0, 2, 1e-5), "delta": 1e-5, "unit": "site",
                      "mode": "site", "spent": False}  # fmt: skip


def test_the_budget_allows_exactly_the_releases_it_covers() -> None:
    budget = (site_epsilon(4.0, 3, 1e-5) + site_epsilon(4.0, 4, 1e-5)) / 2
    privacy = SitePrivacy(PrivacyBudget("site", noise=4.0, epsilon=budget))
    privacy.loaded({"w": np.zeros(3, np.float32)})
    released = 0
    while privacy.may_release():
        privacy.release({"w": np.ones(3, np.float32)})
        released += 1
    assert released == 3 and privacy.spent and privacy.record()["spent"]
    assert privacy.record()["epsilon"] <= budget
    # DP-SGD: ε follows the optimizer's steps; past the budget, nothing more leaves
    steps = SgdSteps(noise=1.0, sample_rate=0.05, steps=10)
    sgd = SitePrivacy(PrivacyBudget("sgd", epsilon=sgd_epsilon(1.0, 0.05, 10, 1e-5)),
                      sgd=lambda: steps)  # fmt: skip
    assert sgd.may_release() and sgd.record()["unit"] == "record"
    steps.steps += 1
    assert not sgd.may_release()


def test_noise_is_calibrated_from_the_budget_and_the_planned_rounds() -> None:
    privacy = SitePrivacy(PrivacyBudget("site", epsilon=8.0), rounds=12)
    assert privacy.noise == pytest.approx(calibrate_site_noise(8.0, 12, 1e-5))
    with pytest.raises(PrivacyError, match="needs dp_rounds"):
        SitePrivacy(PrivacyBudget("site", epsilon=8.0))
    with pytest.raises(PrivacyError, match="needs a DP-SGD optimizer"):
        SitePrivacy(PrivacyBudget("sgd", epsilon=8.0))


# --- on the ledger -------------------------------------------------------------------------

GOOD = {"epsilon": 2.5, "delta": 1e-5, "unit": "site", "mode": "site", "spent": False}


def test_the_ledger_records_a_sites_epsilon_with_its_metrics() -> None:
    d = Driver()
    d.register("alice")
    d.ok("metrics", "alice", 1, {"loss": 0.5, "epoch": 1, "privacy": GOOD})
    assert d.contract.snapshot()["metrics"]["1"]["alice"]["privacy"] == GOOD


@pytest.mark.parametrize(
    ("privacy", "reason"),
    [
        ({**GOOD, "note": "hello"}, "payload.privacy must be {epsilon"),
        ([1, 2], "payload.privacy must be {epsilon"),
        ({**GOOD, "epsilon": -1.0}, "payload.privacy.epsilon must be >= 0"),
        ({**GOOD, "epsilon": math.nan}, "payload.privacy.epsilon must be finite"),
        ({**GOOD, "delta": 1.0}, r"payload.privacy.delta must be in \(0, 1\)"),
        ({**GOOD, "delta": "small"}, "payload.privacy.delta must be a number"),
        ({**GOOD, "unit": "record"}, "payload.privacy.mode and .unit must be"),
        ({**GOOD, "mode": ["site"]}, "payload.privacy.mode and .unit must be"),
        ({**GOOD, "spent": 1}, "payload.privacy.spent must be true or false"),
    ],
)
def test_the_ledger_refuses_a_malformed_privacy_record(privacy: Any, reason: str) -> None:
    d = Driver()
    d.register("alice")
    d.refused("metrics", "alice", 1, {"loss": 0.5, "epoch": 1, "privacy": privacy}, match=reason)


# --- the session's options -----------------------------------------------------------------


class _Arrays:
    """A model adapter over plain arrays (no platform)."""

    def get_params(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(4, np.float32)}

    def set_params(self, params: Any) -> None: ...

    def evaluate(self) -> tuple[float | None, float | None]:
        return None, None


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"dp": "site", "dp_noise": 1.0, "control_variates": True}, "cannot run with control_"),
        ({"dp": "sgd", "dp_epsilon": 8.0}, "dp='sgd' needs DP-SGD in training"),
        ({"dp": "site", "dp_epsilon": 8.0}, "needs dp_rounds"),
        ({"dp": "local"}, "dp must be one of site, sgd"),
    ],
)
def test_the_session_refuses_privacy_options_that_cannot_work(
    monkeypatch, options: dict[str, Any], reason: str
) -> None:
    from openswarm.client.session import SwarmSession

    monkeypatch.setenv("SWARM_LOOPBACK", "True")  # no network needed to check options
    with pytest.raises(PrivacyError, match=reason):
        SwarmSession(_Arrays(), sync_frequency=1, min_peers=1, **options)


def test_dp_sgd_keeps_the_plain_models_names_and_counts_noised_steps() -> None:
    import torch

    from openswarm.client.torch import TorchModel
    from openswarm.torch import make_private

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    batches = torch.utils.data.DataLoader(data, batch_size=16)
    plain = list(model.state_dict())
    model, optimizer, batches = make_private(
        model, torch.optim.SGD(model.parameters(), lr=0.1), batches,
        max_grad_norm=1.0, noise_multiplier=1.5,
    )  # fmt: skip
    assert list(model.state_dict()) == [f"_module.{n}" for n in plain]  # Opacus's wrapper
    adapter = TorchModel(model, optimizer=optimizer)
    assert list(adapter.get_params()) == plain
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    steps = adapter.dp_sgd_steps()
    assert steps is not None and steps.steps == len(batches) and steps.sample_rate == 0.25
    assert steps.noise == 1.5
    with pytest.raises(PrivacyError, match="needs noise_multiplier, or target_epsilon"):
        make_private(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=1), batches,
                     max_grad_norm=1.0)  # fmt: skip


def test_hpe_keywords_carry_the_privacy_options() -> None:
    from swarmlearning._compat import hpe_options

    given = {"dp": "site", "dpEpsilon": 4.0, "dpRounds": 10, "dpClip": 0.5, "dpDelta": 1e-6}
    options = hpe_options(5, 2, "defaultbb.cqdb.sml.hpe", given, "pyt")
    mapped = ("dp", "dp_epsilon", "dp_rounds", "dp_clip", "dp_delta")
    assert [options[k] for k in mapped] == ["site", 4.0, 10, 0.5, 1e-6]
