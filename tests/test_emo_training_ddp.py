"""Multi-process EMO training (DDP, gloo on the CPU) and exact resume, on the micro model and drawn clips.

The two ranks are forked from the test process (no second import of torch and diffusers, so each test
takes seconds); each sets one torch thread before any tensor work and meets the other through a file
store. ``python -m avatar train`` under ``torchrun`` takes the same path (RANK / WORLD_SIZE from the
environment, StageTrainer initialises the process group itself).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.emo.testing import micro_config
from avatar.training.settings import TrainSettings, load_train_settings
from avatar.training.trainer import StageTrainer
from tests.emo_clips import write_drawn_clips

WORLD = 2
JOIN_TIMEOUT_S = 120


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory) -> Path:
    return write_drawn_clips(tmp_path_factory.mktemp("clips"))


def _settings(**stage_options) -> TrainSettings:
    """train_tiny.yaml on the micro model, no gradient clipping (so gradients compare directly), one-step
    sample grids."""
    path = Path(__file__).parents[1] / "configs/emo/train_tiny.yaml"
    settings = load_train_settings(path, model=micro_config())
    settings.grad_clip = 0.0
    settings.sample_steps = 1
    for stage in (0, 2):
        settings.stages[stage] = {**settings.stages.get(stage, {}), **stage_options}
    return settings


def _rank_main(rank: int, store: str, out: Path, job) -> None:
    """Child process: join the gloo group, run ``job(rank)`` and save what it returns as rank<r>.pt."""
    torch.set_num_threads(1)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.save(job(rank), out / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _run_ranks(tmp_path: Path, job) -> list[dict]:
    """Fork WORLD ranks running ``job``; their saved results, in rank order (fails on a crash or hang)."""
    context = multiprocessing.get_context("fork")
    store = tmp_path / "store"
    procs = [context.Process(target=_rank_main, args=(r, str(store), tmp_path, job)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * WORLD, "a rank failed or hung (see its output above)"
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _weights(trainer: StageTrainer) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.params.items()}


def test_two_ranks_average_gradients_like_one_process_with_the_global_batch(clip_data, tmp_path):
    """Stage 0 (autoencoder, no latent regulariser: the loss is a plain mean over the batch): two ranks with
    two frames each end with the same gradients and weights as one process with the four frames."""
    settings = _settings(batch=2, lr=1e-3, latent_reg=0.0)
    frames = StageTrainer(settings, 0, clip_data, tmp_path / "probe").data.sample_frames(
        np.random.default_rng(5), 2 * WORLD
    )
    steps = 3

    def job(rank: int) -> dict:
        trainer = StageTrainer(copy.deepcopy(settings), 0, clip_data, tmp_path / "ddp")
        assert trainer.world == WORLD and trainer.rank == rank
        mine = frames[2 * rank : 2 * rank + 2]
        grads, losses = [], []
        for _ in range(steps):
            losses.append(trainer.train_step(mine))
            grads.append({k: p.grad.detach().clone() for k, p in trainer.params.items()})
        return {"weights": _weights(trainer), "grads": grads, "losses": losses}

    ranks = _run_ranks(tmp_path, job)
    single = StageTrainer(copy.deepcopy(settings), 0, clip_data, tmp_path / "single")
    assert single.world == 1
    single_losses, single_grads = [], []
    for _ in range(steps):
        single_losses.append(single.train_step(frames))
        single_grads.append({k: p.grad.detach().clone() for k, p in single.params.items()})

    for name in single.params:
        torch.testing.assert_close(ranks[0]["weights"][name], ranks[1]["weights"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["grads"][0][name], single_grads[0][name], rtol=1e-4, atol=1e-7)
        single_weight = single.params[name].detach()
        torch.testing.assert_close(ranks[0]["weights"][name], single_weight, rtol=1e-4, atol=1e-5)
    assert ranks[0]["losses"] == ranks[1]["losses"]  # both log the mean over the ranks
    np.testing.assert_allclose(ranks[0]["losses"], single_losses, rtol=1e-5)
    # the halves alone give other gradients: the ranks did exchange theirs
    alone = StageTrainer(copy.deepcopy(settings), 0, clip_data, tmp_path / "alone")
    alone.train_step(frames[:2])
    assert any(not torch.allclose(alone.params[k].grad, single_grads[0][k]) for k in single.params)


def test_two_ranks_on_their_own_video_batches_keep_identical_weights(clip_data, tmp_path):
    """Stage 2 (temporal, audio layers; unused parameters on the way): each rank draws its own windows
    and noise, and after two steps both hold the same, changed weights."""
    settings = _settings(batch=1, lr=1e-3)

    def job(rank: int) -> dict:
        trainer = StageTrainer(copy.deepcopy(settings), 2, clip_data, tmp_path / "ddp")
        before = _weights(trainer)
        batch = trainer._batch()
        drawn = float(sum(e.target.sum() for e in batch))
        trainer.train_step(batch)
        trainer.train_step()
        after = _weights(trainer)
        changed = sum(not torch.equal(before[k], after[k]) for k in after)
        return {"weights": after, "drawn": drawn, "changed": changed}

    first, second = _run_ranks(tmp_path, job)
    assert first["drawn"] != second["drawn"]  # different data on the two ranks
    assert first["changed"] > 0
    for name, value in first["weights"].items():
        assert torch.equal(value, second["weights"][name]), name


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(clip_data, tmp_path):
    """Stage 2 with motion-frame noise and drop (data, noise and drop streams all saved in state.pt):
    2 steps, save, resume for 2 more == 4 steps in one go, bit for bit (weights, EMA, optimiser)."""
    settings = _settings(batch=1, lr=1e-3)
    whole = StageTrainer(copy.deepcopy(settings), 2, clip_data, tmp_path / "whole")
    for _ in range(4):
        whole.train_step()
    first = StageTrainer(copy.deepcopy(settings), 2, clip_data, tmp_path / "parts")
    first.train_step()
    first.train_step()
    first.save()
    resumed = StageTrainer(copy.deepcopy(settings), 2, clip_data, tmp_path / "parts", resume=True)
    assert resumed.step == 2
    resumed.train_step()
    resumed.train_step()
    for name, p in whole.params.items():
        assert torch.equal(p, resumed.params[name]), name
        assert torch.equal(whole.ema.shadow[name], resumed.ema.shadow[name]), name
    state, again = whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg_sq"], again[i]["exp_avg_sq"]) for i in state)
    assert any(not torch.equal(first.params[k], resumed.params[k]) for k in whole.params)  # they trained
