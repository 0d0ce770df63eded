"""Hypernetwork stage and `hnet` learner: chunked generation, the output regulariser, task-IL targets, state.

Tests marked `learned` note their measured values (seed 0); they were the same under
ATEN_CPU_CAPABILITY=default, avx2 and avx512.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from somna.curricula.digits import SplitDigits
from somna.evals.metrics import acc, bwt
from somna.learners.base import SleepContext
from somna.learners.base import SleepConfig
from somna.learners.hypernet import ChunkedHypernetwork, HypernetStage
from somna.learners.stages import check_sleep_stages
from somna.learners.vector.finetune import FinetuneLearner
from somna.learners.vector.hnet import HnetConfig, HnetLearner, generated_mlp, layer_shapes
from somna.platform.registry import LEARNERS, SLEEP_STAGES


def stream(scenario: str = "task", num_experiences: int = 5) -> SplitDigits:
    config = OmegaConf.structured(SplitDigits.Config(num_experiences=num_experiences))
    return SplitDigits(config, scenario=scenario, seed=0)


def learner_for(digits: SplitDigits, **overrides) -> HnetLearner:
    config = OmegaConf.structured(HnetConfig(**overrides))
    return HnetLearner(config, digits.info, seed=0)


def accuracy_matrix(learner: HnetLearner, digits: SplitDigits) -> np.ndarray:
    rows = []
    for experience in digits:
        learner.wake(experience)
        learner.sleep(SleepContext(experience=experience, num_experiences=len(digits), seed=0))
        rows.append([learner.evaluate(e)["accuracy"] for e in digits])
    return np.array(rows)


def test_registered():
    assert "hypernet" in SLEEP_STAGES.names()
    assert LEARNERS.resolve("hnet", "vector") is HnetLearner


def test_chunked_hypernetwork_emits_every_weight_from_few_chunks():
    torch.manual_seed(0)
    hypernet = ChunkedHypernetwork(num_weights=1000, embedding_dim=4, chunk_size=300, chunk_dim=3, hidden=[8])
    weights = hypernet(torch.randn(4))
    assert weights.shape == (1000,) and len(hypernet.chunk_embeddings) == 4
    # the chunks differ only by their chunk embedding: equal chunk embeddings give equal chunks
    with torch.no_grad():
        hypernet.chunk_embeddings[1] = hypernet.chunk_embeddings[0]
    weights = hypernet(torch.randn(4))
    assert torch.allclose(weights[:300], weights[300:600], atol=1e-6)  # equal up to batched-matmul rounding
    assert hypernet(torch.randn(2, 3, 4)).shape == (2, 3, 1000)  # a batch of embeddings


def test_generated_mlp_matches_torch_layers():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    flat = torch.cat([p.detach().reshape(-1) for p in reference.parameters()])
    x = torch.randn(4, 5)
    assert torch.allclose(generated_mlp(x, flat, layer_shapes([5, 7, 3])), reference(x))


@pytest.mark.learned
def test_output_regulariser_keeps_earlier_tasks_weights():
    """Sleeping on task 1 moves h(e_0) far less with β > 0 than without (the only protection of task 0)."""
    digits = stream(num_experiences=5)

    def drift(beta: float) -> float:
        learner = learner_for(digits, wake_epochs=1)
        learner.sleep_stages = {"hypernet": HypernetStage.with_options(epochs=3, beta=beta)}
        for experience in list(digits)[:2]:
            learner.wake(experience)
            metrics = learner.sleep(SleepContext(experience=experience, num_experiences=5, seed=0))
        return metrics["hypernet/old_weight_drift"]

    assert drift(beta=0.5) < 0.2 * drift(beta=0.0)  # measured 0.124 vs 57.4


@pytest.mark.learned
def test_task_incremental_split_digits_keeps_old_tasks():
    """A short schedule (4 sleep epochs) already forgets nothing measurable in task-IL."""
    digits = stream()
    learner = learner_for(digits, wake_epochs=1)
    learner.sleep_stages = {"hypernet": HypernetStage.with_options(epochs=4)}
    R = accuracy_matrix(learner, digits)
    assert bwt(R) >= -0.02 and acc(R) > 0.95  # measured -0.005, 0.991


def test_class_incremental_infers_the_task_by_minimum_entropy():
    """Two hand-made generated networks: each example goes to the one that is confident about it."""
    digits = stream(scenario="class", num_experiences=5)
    learner = learner_for(digits, hidden=[])  # a linear target network: weights (10, 64) then bias (10,)
    learner.learned_tasks = 2
    learner.task_classes[0, [0, 1]] = True
    learner.task_classes[1, [2, 3]] = True
    linear = {0: torch.zeros(10, 64), 1: torch.zeros(10, 64)}
    linear[0][0, 0] = 50.0  # task 0's network is sure of class 0 when pixel 0 is on
    linear[1][3, 1] = 50.0  # task 1's network is sure of class 3 when pixel 1 is on
    flat = {t: torch.cat([w.reshape(-1), torch.zeros(10)]) for t, w in linear.items()}
    learner.hypernet = lambda embeddings: torch.stack([flat[0] if e[0] > 0 else flat[1] for e in embeddings])
    learner.task_embeddings[0, 0], learner.task_embeddings[1, 0] = 1.0, -1.0
    x = torch.zeros(2, 64)
    x[0, 0], x[1, 1] = 1.0, 1.0
    assert learner.predict({"x": x}).tolist() == [0, 3]


def test_state_dict_is_tensors_and_restores_exactly(tmp_path):
    digits = stream()
    learner = learner_for(digits, wake_epochs=1)
    learner.sleep_stages = {"hypernet": HypernetStage.with_options(epochs=1)}
    learner.wake(digits[0])
    learner.sleep(SleepContext(experience=digits[0], num_experiences=5, seed=0))
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    save_file(state, tmp_path / "hnet.safetensors")
    restored = learner_for(digits, wake_epochs=1)
    restored.load_state_dict(load_file(tmp_path / "hnet.safetensors"))
    batch = digits[0].test.with_format("torch")[:]
    assert torch.equal(restored.predict(batch, task_id=0), learner.predict(batch, task_id=0))
    assert restored.learned_tasks == 1 and torch.equal(restored.task_embeddings, learner.task_embeddings)


def test_bad_stage_options_are_value_errors():
    with pytest.raises(ValueError, match="hypernet options"):
        HypernetStage.with_options(epochs=0)


def test_a_learner_without_the_stage_hooks_is_refused_before_it_runs():
    with pytest.raises(ValueError, match="learner.hypernet"):
        check_sleep_stages(SleepConfig(stages=["hypernet"]), FinetuneLearner)
    check_sleep_stages(SleepConfig(stages=["hypernet"]), HnetLearner)


@pytest.mark.learned
@pytest.mark.slow
def test_split_digits_task_il_targets_through_the_platform(tmp_path):
    """`somna run split-digits scenario=task learner=hnet`: BWT >= -0.02, ACC within 3 points of joint."""
    from somna.platform.config import load_config
    from somna.platform.runner import run

    results = {}
    for learner in ("hnet", "joint"):
        cfg = load_config("split-digits", ["scenario=task", f"learner={learner}", "executor=inline"])
        results[learner] = run(cfg, tmp_path / learner)
    assert results["hnet"]["bwt"] >= -0.02  # measured 0.000
    assert results["hnet"]["acc"] >= results["joint"]["acc"] - 0.03  # measured 0.996 vs joint 0.998


def test_lm_path_generates_lora_adapters_and_restores_exactly():
    """Text `hnet`: PEFT LoRA matrices come from the hypernetwork; the base LM is frozen after the first wake."""
    from somna.learners.text.hnet import HnetLM, HnetLMConfig
    from somna.platform.config import load_config
    from somna.platform.pretraining import cached_base, load_pretrain_config
    from somna.platform.runner import build_curriculum

    curriculum = build_curriculum(load_config("fact-stream-micro"))
    config = HnetLMConfig(epochs=1, batch_size=4, eval_max_new_tokens=4)
    config.model.base, config.model.cms_periods = str(cached_base(load_pretrain_config("world-micro"))), [1, 2]  # the session's base
    config.sleep.options = {"hypernet": {"epochs": 2, "batch_size": 4, "beta": 1.0}}
    learner = HnetLM(OmegaConf.structured(config), curriculum.info, seed=0)
    parameters = {id(p) for p in learner.model.parameters()}
    assert learner.lora_modules and all(id(m.weight) not in parameters for m in learner.lora_modules)
    drifts = []
    for experience in curriculum:
        learner.wake(experience)
        base = {name: p.clone() for name, p in learner.model.named_parameters()}
        drifts.append(learner.sleep(SleepContext(experience=experience, num_experiences=2, seed=0))["hypernet/old_weight_drift"])
        assert all(torch.equal(base[name], p) for name, p in learner.model.named_parameters())
    assert drifts[0] == 0.0 and drifts[1] > 0.0  # only the second sleep has an earlier task to hold
    assert not any(p.requires_grad for p in learner.model.parameters())
    restored = HnetLM(OmegaConf.structured(config), curriculum.info, seed=0)
    restored.load_state_dict(learner.state_dict())
    prompts = [row["prompt"] for row in curriculum[1].test][:3]
    assert torch.equal(restored.prompt_entropy(prompts), learner.prompt_entropy(prompts))
    assert restored.generate(prompts, 4) == learner.generate(prompts, 4)
