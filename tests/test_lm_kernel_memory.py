"""The `kernel` fast memory: a kernel-mixer base's recurrent state, carried across the passages wake reads."""

from __future__ import annotations

import pytest
import torch

from somna.learners.base import SleepContext
from somna.platform.builders import build_curriculum, build_learner
from somna.platform.config import load_config
from somna.platform.pretraining import load_pretrain_config, pretrain_into


@pytest.fixture(scope="module")
def deltanet_base(tmp_path_factory):
    """world-micro with DeltaNet mixers, briefly trained: what is tested here is plumbing, not reading."""
    cfg = load_pretrain_config("world-micro", ["model.short_term=deltanet", "train.steps=30", "eval.probes=4", "tokenizer.documents=500"])
    directory = tmp_path_factory.mktemp("deltanet-base") / "base"
    pretrain_into(cfg, directory, progress=False)
    return directory


def setup(base, *overrides: str):
    cfg = load_config("fact-stream-micro", [f"learner.model.base={base}", "learner.fast_memory=kernel", *overrides])
    curriculum = build_curriculum(cfg)
    return cfg, curriculum, build_learner(cfg, curriculum.info)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def ids(learner, text: str) -> torch.Tensor:
    """`text` as wake reads a document: <s> text </s>, unpadded."""
    batch = learner.encode_documents([text])
    return batch["input_ids"][batch["attention_mask"].bool()][None]


def test_wake_carries_the_kernel_state_across_passages_as_one_sequence_would(deltanet_base):
    """After wake writes passages A and B, the teacher reading P computes what the slow model computes on A B P;
    no weight changes, and the student starts from an empty state again."""
    _, curriculum, learner = setup(deltanet_base)
    passages = list(curriculum[0].train["text"][:2])
    prompt = curriculum[0].test["prompt"][0]
    before = state(learner.model)
    with torch.no_grad():
        alone = learner.model(ids(learner, prompt)).logits
        together = learner.model(torch.cat([ids(learner, text) for text in [*passages, prompt]], dim=1)).logits
    learner.fast_memory.write(learner, passages, 0)
    assert all(torch.equal(value, learner.model.state_dict()[name]) for name, value in before.items())  # no weight moved
    assert all(p.grad is None for p in learner.model.parameters())
    context = learner.begin_sleep(SleepContext(curriculum[0], 2, seed=0))
    with torch.no_grad():
        teacher = context.teacher(ids(learner, prompt)).logits
        student = learner.model(ids(learner, prompt)).logits
        slow = context.slow(ids(learner, prompt)).logits
    length = teacher.size(1)
    torch.testing.assert_close(teacher, together[:, -length:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(teacher, alone, atol=1e-3)  # the store changes what the teacher says
    assert torch.equal(student, alone) and torch.equal(slow, alone)  # reset: the student is the slow model


def test_the_written_state_travels_in_the_pending_state_to_a_rebuilt_learner(deltanet_base):
    """A sleep on a Ray Train worker rebuilds the learner between wake and sleep: its teacher must be the same."""
    cfg, curriculum, learner = setup(deltanet_base)
    learner.wake(curriculum[0])
    rebuilt = build_learner(cfg, curriculum.info)
    rebuilt.load_state_dict(learner.state_dict())
    rebuilt.load_pending_state(learner.pending_state())
    prompt = ids(learner, curriculum[0].test["prompt"][0])
    teachers = [each.begin_sleep(SleepContext(curriculum[0], 2, seed=0)).teacher for each in (learner, rebuilt)]
    with torch.no_grad():
        assert torch.equal(teachers[0](prompt).logits, teachers[1](prompt).logits)
        assert not torch.equal(teachers[1](prompt).logits, rebuilt.model(prompt).logits)


def test_a_sleep_distills_the_kernel_state_token_by_token_into_the_new_expert_only(deltanet_base):
    """The teacher reads the student's own prompts, so GKD runs; only the new expert moves, and the store ends empty."""
    _, curriculum, learner = setup(deltanet_base, "learner.sleep.options.knowledge-seeding.steps=2")
    learner.wake(curriculum[0])
    before = state(learner.model)
    metrics = learner.sleep(SleepContext(curriculum[0], 2, seed=0))
    moved = {name for name, value in learner.model.state_dict().items() if not torch.equal(before[name], value)}
    assert moved and all(".experts.0." in name or name.endswith("expert_mask") for name in moved)
    assert "knowledge-seeding/gkd_loss" in metrics and metrics["knowledge-seeding/kl_before"] > 0
    assert all(mixer.memory is None for mixer in learner.fast_memory.mixers)


def test_the_kernel_memory_on_an_attention_base_is_a_config_error():
    """Said when the learner is built (the CLI prints it as one line), not after a wake found nothing to write."""
    cfg = load_config("fact-stream-micro", ["learner.fast_memory=kernel"])
    with pytest.raises(ValueError, match="learner.fast_memory=kernel needs a base whose mixers are memory kernels"):
        build_learner(cfg, build_curriculum(cfg).info)
