"""How text becomes model inputs and scores, for every text learner, sleep stage and `somna pretrain`.

Every sequence a model trains on or is scored on is "<s>prompt completion</s>", or "<s>text</s>"
for a document (no prompt); a pretraining sequence may chain several such documents (`encode_chains`). It is assembled from separately tokenized parts ([<s>] + prompt +
" completion" + [</s>]), so the tokens that are scored (the completion and </s>) are known
exactly for any tokenizer; a byte-level BPE splits words at spaces, so the parts tokenize as the
joined text does. Training batches are right-padded; generation prompts are left-padded with
explicit positions (what TRL and Hugging Face models expect).

Probes are scored by greedy decoding: exact match (SQuAD normalisation), chrF, and the
perplexity of the answer given the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from somna.learners.text.rewards import chrf, exact_match

IGNORE = -100


def encode_pairs(tokenizer: Any, prompts: list[str], completions: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """"<s>prompt completion</s>" ("<s>completion</s>" for an empty prompt), right-padded, truncated from the
    left to `max_length`; labels are the completion's tokens and </s> (every token of a document), -100 elsewhere."""
    return encode_chains(tokenizer, [[pair] for pair in zip(prompts, completions)], max_length)


def encode_chains(tokenizer: Any, chains: list[list[tuple[str, str]]], max_length: int) -> dict[str, torch.Tensor]:
    """One sequence per chain: its (prompt, completion) documents one after another, each encoded and labelled
    as `encode_pairs` does it alone ("<s>prompt completion</s>"), so a recurrent mixer reads them as it would
    with its state carried from one document to the next; right-padded, truncated from the left to `max_length`."""
    pairs = [pair for chain in chains for pair in chain]
    heads = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    tails = tokenizer([f" {c}" if p else c for p, c in pairs], add_special_tokens=False)["input_ids"]
    documents = iter(zip(pairs, heads, tails))
    sequences, targets = [], []
    for chain in chains:
        ids, labels = [], []
        for (prompt, _), head, tail in (next(documents) for _ in chain):
            document = [tokenizer.bos_token_id, *head, *tail, tokenizer.eos_token_id]
            scored = len(tail) + 1 if prompt else len(document) - 1
            ids += document
            labels += [IGNORE] * (len(document) - scored) + document[len(document) - scored :]
        sequences.append(ids[-max_length:])
        targets.append(labels[-max_length:])
    width = max(len(ids) for ids in sequences)
    return {
        "input_ids": torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in sequences]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences]),
        "labels": torch.tensor([labels + [IGNORE] * (width - len(labels)) for labels in targets]),
    }


def encode_documents(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """<s> text </s>, every token scored."""
    return encode_pairs(tokenizer, [""] * len(texts), texts, max_length)


def texts_to_bytes(texts: list[str], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts as a checkpoint can hold them (tensors only): (n, width) zero-padded UTF-8 rows and their byte lengths.
    `width` defaults to the longest text's bytes."""
    encoded = [text.encode() for text in texts]
    rows = torch.zeros(len(encoded), max([len(raw) for raw in encoded], default=0) if width is None else width, dtype=torch.uint8)
    for row, raw in enumerate(encoded):
        rows[row, : len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return rows, torch.tensor([len(raw) for raw in encoded], dtype=torch.long)


def texts_from_bytes(rows: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """The inverse of `texts_to_bytes`."""
    return [bytes(rows[i, :n].tolist()).decode() for i, n in enumerate(lengths.tolist())]


def on_device(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def answer_nll(model: torch.nn.Module, tokenizer: Any, prompts: list[str], answers: list[str], max_length: int) -> tuple[float, int]:
    """Summed negative log-likelihood of " answer</s>" after "<s>prompt", and its token count."""
    batch = on_device(encode_pairs(tokenizer, prompts, answers, max_length), model)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return float(nll), int((targets != IGNORE).sum())


def context_length(model: torch.nn.Module) -> int | None:
    """The longest sequence the model takes (None: no fixed limit)."""
    return getattr(model.config, "max_position_embeddings", None)


def encode_prompts(tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    """"<s>prompt" for each prompt, left-padded, with the positions of the real tokens (from 0)."""
    heads = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    width = 1 + max(len(head) for head in heads)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - 1 - len(h)) + [tokenizer.bos_token_id, *h] for h in heads])
    mask = torch.tensor([[0] * (width - 1 - len(h)) + [1] * (1 + len(h)) for h in heads])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def with_passage(prompt: str, passage: str) -> str:
    """The reading format the base was pretrained on: "{passage} {prompt}" (the prompt alone without a passage)."""
    return f"{passage} {prompt}" if passage else prompt


@torch.no_grad()
def greedy_answers(model: torch.nn.Module, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy completions of "<s>prompt", up to </s>, cut at the first newline and stripped."""
    if not prompts:
        return []
    model.eval()
    batch = on_device(encode_prompts(tokenizer, prompts), model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    limit = context_length(model)
    room = max_new_tokens if limit is None else min(max_new_tokens, limit - ids.size(1))
    done = torch.zeros(len(prompts), dtype=torch.bool, device=ids.device)
    new_tokens = []
    for _ in range(max(0, room)):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_ids = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1].argmax(-1)
        next_ids = next_ids.masked_fill(done, tokenizer.pad_token_id)
        new_tokens.append(next_ids)
        done |= next_ids == tokenizer.eos_token_id
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if bool(done.all()):
            break
    if not new_tokens:
        return [""] * len(prompts)
    out = torch.stack(new_tokens, dim=1).tolist()
    return [tokenizer.decode(row, skip_special_tokens=True).split("\n")[0].strip() for row in out]


@torch.no_grad()
def sample_completions(model: torch.nn.Module, tokenizer: Any, prompts: list[str], max_new_tokens: int, seed: int, temperature: float = 1.0) -> list[str]:
    """Sampled completions of `prompts`, each rendered as a chat user turn ("<s>prompt"), seeded; stripped."""
    if not prompts:
        return []
    torch.manual_seed(seed)
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = on_device(tokenizer(rendered, padding=True, return_tensors="pt", add_special_tokens=False), model)
    model.eval()
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, batch["input_ids"].size(1) :]]


def score_probes(
    rows: list[dict[str, str]],
    generate: Callable[[list[str]], list[str]],
    nll: Callable[[list[str], list[str]], tuple[float, int]],
    batch_size: int,
) -> dict[str, float]:
    """Exact match and chrF of `generate`'s answers to `rows` ("prompt" -> "answer"), and the answers' perplexity
    from `nll` (summed NLL, token count): the learner passes its own decoding (hnet picks an adapter per probe)."""
    matches, chrfs, total, tokens = [], [], 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts, answers = [r["prompt"] for r in chunk], [r["answer"] for r in chunk]
        predictions = generate(prompts)
        matches += [exact_match(p, a) for p, a in zip(predictions, answers)]
        chrfs += [chrf(p, a) for p, a in zip(predictions, answers)]
        chunk_nll, chunk_tokens = nll(prompts, answers)
        total, tokens = total + chunk_nll, tokens + chunk_tokens
    return {
        "exact_match": sum(matches) / max(len(matches), 1),
        "chrf": sum(chrfs) / max(len(chrfs), 1),
        "perplexity": math.exp(min(total / max(tokens, 1), 50.0)),
    }


def score_model(model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, str]], *, batch_size: int, max_new_tokens: int, max_length: int) -> dict[str, float]:
    """`score_probes` with plain greedy decoding of `model`."""
    return score_probes(
        rows,
        lambda prompts: greedy_answers(model, tokenizer, prompts, max_new_tokens),
        lambda prompts, answers: answer_nll(model, tokenizer, prompts, answers, max_length),
        batch_size,
    )


def scored_log_probs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probabilities over the vocabulary at each scored token of an `encode_pairs` batch: (tokens, vocab), row order."""
    batch = on_device(batch, model)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    return logits[batch["labels"][:, 1:] != IGNORE].log_softmax(-1)


def kl_divergence(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(target || model), both given as log-probabilities (tokens, vocab)."""
    return (target.exp() * (target - log_probs)).sum(-1).mean()


@torch.no_grad()
def completion_kl(
    teacher: torch.nn.Module, student: torch.nn.Module, tokenizer: Any,
    teacher_prompts: list[str], student_prompts: list[str], completions: list[str], max_length: int,
) -> float:
    """Mean per-token KL(teacher || student) over the completions' tokens (and </s>), each model reading its own prompt.

    The teacher–student gap of a sleep: the completion is tokenized on its own, so both sides score
    the same tokens whatever precedes them (a teacher may have the passage in its prompt)."""
    teacher_lp = scored_log_probs(teacher, encode_pairs(tokenizer, teacher_prompts, completions, max_length))
    student_lp = scored_log_probs(student, encode_pairs(tokenizer, student_prompts, completions, max_length))
    return float(kl_divergence(teacher_lp, student_lp))
