"""The byte tokenizer: exact round trip, byte ids, left padding, chat template, offline reload."""

from __future__ import annotations

import os

from somna.learners.text.tokenizer import VOCAB_SIZE, build_byte_tokenizer


def test_round_trip_is_exact_and_ids_are_bytes():
    tokenizer = build_byte_tokenizer()
    text = "Héllo, wörld! 日本語 \n\ttabs  and  spaces?"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == VOCAB_SIZE == 259


def test_left_padding_and_chat_template():
    tokenizer = build_byte_tokenizer()
    batch = tokenizer(["ab", "abcd"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0] == [tokenizer.pad_token_id] * 2 + [97, 98]
    assert batch["attention_mask"][0] == [0, 0, 1, 1]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q: hi? A:"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    assert rendered == "Q: hi? A: yo</s>"


def test_reload_from_local_dir_offline(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    build_byte_tokenizer().save_pretrained(tmp_path)
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "über 42 ✓"
    assert reloaded(text, add_special_tokens=False)["input_ids"] == list(text.encode())
    assert reloaded.padding_side == "left" and reloaded.chat_template == build_byte_tokenizer().chat_template
