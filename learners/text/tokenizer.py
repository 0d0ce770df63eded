"""The subword tokenizer of somna's base models: byte-level BPE trained in code on a corpus (the world's).

Byte-level: the 256 bytes are in the vocabulary, so any text (a generated language, an intent,
"日本語") still encodes and decodes back exactly; the merges learned on the corpus make its words
short (a template word is one token, a made-up name two or three), which is what lets a small
model read a whole passage within its context. `vocab_size` = 256 + 3 learns no merge: a plain
byte tokenizer. Specials <pad>, <s>, </s>; no token is added implicitly — the code that builds a
sequence writes <s> and </s> itself, and the chat template starts with <s>, so every sequence a
sleep stage samples or trains on begins like the ones wake reads.

Wrapped in `PreTrainedTokenizerFast` with that chat template and left padding (TRL's trainers
need both); `save_pretrained` / `from_pretrained` on a local directory work with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, EOS)
NUM_BYTES = 256

# A user turn is the prompt as it is; the assistant's turn is " completion</s>": "<s>Q: ... A: red</s>",
# the same tokens as the documents wake reads ("<s>" + prompt + " " + answer + "</s>").
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %} {{ message['content'] }}"
    "{{ eos_token }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with `vocab_size` tokens (3 specials + 256 bytes + merges) learned from `texts`."""
    if vocab_size < len(SPECIALS) + NUM_BYTES:
        raise ValueError(f"tokenizer vocab_size must be >= {len(SPECIALS) + NUM_BYTES} (specials + bytes), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(texts, trainer)
    return wrap(core)


def wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    """The `tokenizers` object as the transformers tokenizer every text learner and TRL trainer uses."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, padding_side="left", truncation_side="left"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A loaded tokenizer (ours or a Hugging Face model's) made usable by the learners and TRL:
    a pad token (its </s> if it has none), a <s> (its </s> if it has none), left padding, and our
    chat template when it brings none."""
    if tokenizer.eos_token is None:
        raise ValueError(f"the base's tokenizer ({type(tokenizer).__name__}) has no end-of-sequence token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
