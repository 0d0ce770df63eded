"""`hnet` for text streams: the hypernetwork generates PEFT LoRA adapters of the sleep LM, one per task embedding.

The base LM (learners/text/bases.py) gets LoRA adapters (PEFT, rank `lora_rank`)
on its MLPs (`lora_targets`, module names of the base: SleepLM's fc_in/fc_out);
their A/B matrices are not parameters but the output of the `ChunkedHypernetwork`
for the current task embedding, so the `hypernet` sleep stage
(learners/hypernet.py) trains them with the same output regulariser as on the
vector path. The first wake fine-tunes the base on experience 0 (it is frozen
afterwards); every later wake learns only its task embedding. Text streams
are domain-incremental (no task id at test time), so each probe picks the
adapter of minimum predictive entropy over its prompt tokens.
Evaluation's perplexity is measured with the last adapter chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn

from somna.learners.base import Metrics, SleepConfig, SleepContext
from somna.learners.hypernet import ChunkedHypernetwork
from somna.learners.text.encoding import encode_prompts
from somna.learners.text.learner import TextLearner, TextLearnerConfig
from somna.platform.registry import register_learner


@dataclass
class HnetLMConfig(TextLearnerConfig):
    name: str = "hnet"
    lora_rank: int = 4
    lora_targets: list[str] = field(default_factory=lambda: ["fc_in", "fc_out"])
    hnet_hidden: list[int] = field(default_factory=lambda: [64, 64])
    embedding_dim: int = 32
    chunk_size: int = 1024
    chunk_dim: int = 32
    embedding_lr: float = 1e-2
    sleep: SleepConfig = field(default_factory=lambda: SleepConfig(stages=["hypernet"]))


@register_learner("hnet")
class HnetLM(TextLearner):
    """Sleep LM whose LoRA adapters come from a task-conditioned hypernetwork (von Oswald et al. 2020)."""

    Config = HnetLMConfig
    hypernet: ChunkedHypernetwork  # the `hypernet` stage's hooks (learners/hypernet.py)
    task_embeddings: Tensor

    def __init__(self, config: Any, info: Any, seed: int):
        super().__init__(config, info, seed)
        if config.lora_rank < 1:
            raise ValueError(f"learner.lora_rank must be >= 1, got {config.lora_rank}")
        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules=list(config.lora_targets), lora_dropout=0.0)
        self.model = get_peft_model(self.model, lora)
        self.lora_modules = [m for name, m in self.model.named_modules() if name.endswith(("lora_A.default", "lora_B.default"))]
        if not self.lora_modules:
            raise ValueError(f"learner.lora_targets matched no module of the LM: {list(config.lora_targets)}")
        self.lora_shapes = [tuple(m.weight.shape) for m in self.lora_modules]
        for module in self.lora_modules:  # their weights become generated tensors, not parameters
            del module.weight
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)  # the base LM trains in the first wake
        torch.manual_seed(seed)
        num_weights = sum(math.prod(s) for s in self.lora_shapes)
        self.hypernet = ChunkedHypernetwork(num_weights, config.embedding_dim, config.chunk_size, config.chunk_dim, list(config.hnet_hidden))
        self.task_embeddings = torch.randn(info.num_experiences, config.embedding_dim)
        self.learned_tasks = 0
        self.use_weights(torch.zeros(num_weights))

    def use_weights(self, flat: Tensor) -> None:
        """Install a generated flat vector as the LoRA A/B matrices (differentiable back to the hypernetwork)."""
        pieces = torch.split(flat, [math.prod(s) for s in self.lora_shapes])
        for module, piece, shape in zip(self.lora_modules, pieces, self.lora_shapes):
            module.weight = piece.view(shape)

    # -- wake ------------------------------------------------------------------------------
    def wake(self, experience: Any) -> Metrics:
        task = experience.index
        self.learned_tasks = max(self.learned_tasks, task + 1)
        if task == 0:  # the base LM's one training phase, without adapters
            self.use_weights(torch.zeros_like(self.hypernet(self.task_embeddings[0])).detach())
            metrics = super().wake(experience)
            self.apply_pending_updates()
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
            return metrics
        data = self.hypernet_data(SleepContext(experience=experience, num_experiences=self.info.num_experiences, seed=self.seed))
        embedding = nn.Parameter(self.task_embeddings[task].clone())
        optimizer = torch.optim.Adam([embedding], lr=self.config.embedding_lr)
        total, steps = 0.0, 0
        for batch in torch.randperm(len(data[0]), generator=self.generator(task, salt=5)).split(self.config.batch_size):
            loss = self.hypernet_loss(self.hypernet(embedding), task, *(column[batch] for column in data))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        self.hypernet.zero_grad(set_to_none=True)
        self.task_embeddings[task] = embedding.detach()
        return {"loss": total / max(steps, 1), "train_documents": float(len(data[0]))}

    # -- the hypernet stage's contract -----------------------------------------------------
    def hypernet_data(self, context: SleepContext) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.encode_documents(self.training_texts(context.experience))
        return batch["input_ids"], batch["attention_mask"], batch["labels"]

    def hypernet_loss(self, weights: Tensor, task: int, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        self.use_weights(weights)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    # -- prediction: per-prompt adapter by minimum predictive entropy ------------------------
    @torch.no_grad()
    def prompt_entropy(self, prompts: list[str]) -> Tensor:
        """(learned tasks, prompts): mean next-token entropy over each prompt under each task's adapter."""
        batch = encode_prompts(self.tokenizer, prompts)
        mask = batch["attention_mask"].float()
        rows = []
        for task in range(max(self.learned_tasks, 1)):
            self.use_weights(self.hypernet(self.task_embeddings[task]))
            log_probs = self.model(**batch).logits.log_softmax(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            rows.append((entropy * mask).sum(-1) / mask.sum(-1))
        return torch.stack(rows)

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        if not prompts:
            return []
        chosen = self.prompt_entropy(prompts).argmin(dim=0)
        answers: list[str] = [""] * len(prompts)
        for task in chosen.unique().tolist():
            indices = (chosen == task).nonzero().flatten().tolist()
            self.use_weights(self.hypernet(self.task_embeddings[task]))
            for index, answer in zip(indices, super().generate([prompts[i] for i in indices], max_new_tokens)):
                answers[index] = answer
        return answers

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return super().state_dict() | {f"hypernet.{k}": v.detach().clone() for k, v in self.hypernet.state_dict().items()} | {
            "task_embeddings": self.task_embeddings.clone(),
            "learned_tasks": torch.tensor(self.learned_tasks),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.hypernet.load_state_dict({k.removeprefix("hypernet."): v for k, v in state.items() if k.startswith("hypernet.")})
        self.task_embeddings = state["task_embeddings"].clone()
        self.learned_tasks = int(state["learned_tasks"])
        if self.learned_tasks:
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
