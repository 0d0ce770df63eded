"""The subword tokenizer: trained in code, any text round-trips, <s> leads every rendered chat, offline reload."""

from __future__ import annotations

import os

import numpy as np
import pytest

from somna.curricula.world import World, WorldConfig
from somna.learners.text.tokenizer import NUM_BYTES, SPECIALS, train_tokenizer

CORPUS = World(WorldConfig(num_entities=20, num_towns=5)).pretraining_documents(np.random.default_rng(0), 300)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, 400)


def test_any_text_round_trips_exactly_and_world_words_are_short(tokenizer):
    for text in ("Héllo, wörld! 日本語 \n\ttabs  and  spaces?", "en: the cat sees the fish | l0: gose mutu", "ünïcödé ✓ 🙂", CORPUS[0]):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer) == 400
    document = CORPUS[1]
    assert len(tokenizer(document, add_special_tokens=False)["input_ids"]) < len(document.encode()) / 2  # merges shorten world text


def test_training_is_deterministic_and_no_merges_is_a_byte_tokenizer():
    assert train_tokenizer(CORPUS, 400).get_vocab() == train_tokenizer(CORPUS, 400).get_vocab()
    byte_level = train_tokenizer(CORPUS, len(SPECIALS) + NUM_BYTES)
    assert len(byte_level(CORPUS[0], add_special_tokens=False)["input_ids"]) == len(CORPUS[0].encode())
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, 100)


def test_left_padding_and_a_chat_template_that_starts_with_bos(tokenizer):
    batch = tokenizer(["Q: hi", "Q: hi there friend"], padding=True, add_special_tokens=False)
    assert batch["attention_mask"][0][0] == 0 and batch["input_ids"][0][0] == tokenizer.pad_token_id
    conversation = [{"role": "user", "content": "Q: who? A:"}, {"role": "assistant", "content": "Mira"}]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == "<s>Q: who? A: Mira</s>"
    assert tokenizer.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True) == "<s>Q: who? A:"
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"][0] == tokenizer.bos_token_id


def test_reload_from_a_local_dir_offline(tokenizer, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "über 42 ✓ Bakuto lives in Tomelin."
    assert reloaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert reloaded.padding_side == "left" and reloaded.chat_template == tokenizer.chat_template
