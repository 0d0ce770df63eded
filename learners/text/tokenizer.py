"""A byte-level tokenizer built in code, so text learners never touch the Hugging Face hub.

Ids 0-255 are the raw bytes of the UTF-8 text (no merges, so every string
round-trips exactly); specials follow. It is wrapped in
`PreTrainedTokenizerFast` with a chat template and left padding because TRL's
trainers (GKD, GRPO) need both. `save_pretrained` / `from_pretrained` on a
local directory work with `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
NUM_BYTES = 256
SPECIALS = (PAD, BOS, EOS)
VOCAB_SIZE = NUM_BYTES + len(SPECIALS)

# Plain-text chat format: what a TRL trainer renders for "messages"/"prompt" columns.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}{% if message['role'] != 'assistant' %} {% else %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)


def _byte_vocab() -> dict[str, int]:
    """Token string -> id for the 256 bytes, spelled the way the ByteLevel pre-tokenizer spells them."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # ByteLevel maps byte b to a printable unicode char; recover that map in byte order.
    byte_to_char = _bytes_to_unicode()
    assert set(byte_to_char.values()) == set(alphabet)
    vocab = {byte_to_char[b]: b for b in range(NUM_BYTES)}
    for offset, token in enumerate(SPECIALS):
        vocab[token] = NUM_BYTES + offset
    return vocab


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-char table (the one ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(NUM_BYTES):
        if b not in printable:
            printable.append(b)
            chars.append(NUM_BYTES + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """The byte tokenizer every text learner uses (vocab 259: bytes, <pad>, <s>, </s>)."""
    core = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        truncation_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
