"""Encoding text for training: a chain of documents is its documents' encodings one after another."""

from __future__ import annotations

import torch

from helpers import small_world_tokenizer
from somna.learners.text.encoding import IGNORE, encode_chains, encode_pairs


def unpadded(batch: dict[str, torch.Tensor], row: int) -> tuple[list[int], list[int]]:
    keep = batch["attention_mask"][row].bool()
    return batch["input_ids"][row][keep].tolist(), batch["labels"][row][keep].tolist()


def test_a_chain_concatenates_its_documents_as_each_is_encoded_alone():
    tokenizer = small_world_tokenizer()
    chain = [("", "Bakuto lives in Tomelin."), ("Kelo keeps a cat. Q: what pet does Kelo have? A:", "cat"), ("Q: where does Bakuto live? A:", "Tomelin")]
    alone = [unpadded(encode_pairs(tokenizer, [p], [c], 128), 0) for p, c in chain]
    ids, labels = unpadded(encode_chains(tokenizer, [chain, chain[:1]], 128), 0)
    assert ids == [i for part, _ in alone for i in part] and labels == [label for _, part in alone for label in part]
    assert ids.count(tokenizer.bos_token_id) == 3 and ids.count(tokenizer.eos_token_id) == 3
    scored = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert tokenizer.decode(scored) == "Bakuto lives in Tomelin.</s> cat</s> Tomelin</s>"  # a document whole, the answers
    truncated = encode_chains(tokenizer, [chain], 10)
    assert truncated["input_ids"][0].tolist() == ids[-10:] and truncated["labels"][0].tolist() == labels[-10:]
