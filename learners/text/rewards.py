"""Text scores and the learning-to-imitate reward (PAPERS.md, "Language Models Need Sleep").

Imitation reward for a student completion d_hat of a teacher sample d:
    r = gamma * r_sem + (1 - gamma) * r_abs
    r_abs = 1 - lev(d_hat, d) / max(|d_hat|, |d|)   if that normalised distance <= z0, else 0
    r_sem = 1 if the frozen judge says both mean the same, else 0.
The judge is offline and frozen by construction: `same_meaning` normalises both
strings (case, punctuation, whitespace) and asks whether they say (almost) the same
words in any order: SQuAD's word-level F1 of the two at least `threshold`. A
reordered restatement of the same facts is the same meaning (while its Levenshtein
distance, r_abs, is large); a short statement with one wrong fact word is not
(F1 3/4 < 0.8). An exact bag-of-words match, the judge this replaced, was almost
never met by sampled completions, so r_sem was ~0 and GRPO's per-group reward
normalisation made gamma a no-op. (The paper uses an LLM judge; none ships offline here.)
z0 is a threshold on the *normalised* distance, in [0, 1].
"""

from __future__ import annotations

import re
from collections import Counter


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def normalized_distance(a: str, b: str) -> float:
    """lev(a, b) / max(|a|, |b|) in [0, 1]; 0 for two empty strings."""
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def normalize_answer(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed (SQuAD-style answer normalisation)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def word_f1(a: str, b: str) -> float:
    """SQuAD's F1 between the bags of normalised words of `a` and `b` (1.0 for two empty strings)."""
    words_a, words_b = normalize_answer(a).split(), normalize_answer(b).split()
    if not words_a or not words_b:
        return float(words_a == words_b)
    common = sum((Counter(words_a) & Counter(words_b)).values())
    if not common:
        return 0.0
    precision, recall = common / len(words_a), common / len(words_b)
    return 2 * precision * recall / (precision + recall)


SAME_MEANING_F1 = 0.8


def same_meaning(a: str, b: str, threshold: float = SAME_MEANING_F1) -> bool:
    """The frozen semantic judge: (almost) the same words, in any order (word F1 >= threshold)."""
    return word_f1(a, b) >= threshold


def abs_reward(completion: str, target: str, z0: float) -> float:
    """r_abs: 1 - normalised Levenshtein distance when it is within z0, else 0."""
    distance = normalized_distance(completion, target)
    return 1.0 - distance if distance <= z0 else 0.0


def imitation_reward(completion: str, target: str, gamma: float, z0: float) -> float:
    """r = gamma * r_sem + (1 - gamma) * r_abs."""
    return combine_rewards(float(same_meaning(completion, target)), abs_reward(completion, target, z0), gamma)


def combine_rewards(r_sem: float, r_abs: float, gamma: float) -> float:
    """The imitation reward from its parts, for callers that also log the parts."""
    return gamma * r_sem + (1.0 - gamma) * r_abs


def chrf(prediction: str, reference: str, max_order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popovic 2015): character n-gram F-beta, precision and recall averaged over n = 1..max_order.

    Spaces are removed as in sacrebleu's default; orders with no n-grams on either side are skipped.
    """
    hyp, ref = prediction.replace(" ", ""), reference.replace(" ", "")
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        hyp_grams = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not hyp_grams and not ref_grams:
            continue
        overlap = sum((hyp_grams & ref_grams).values())
        precisions.append(overlap / sum(hyp_grams.values()) if hyp_grams else 0.0)
        recalls.append(overlap / sum(ref_grams.values()) if ref_grams else 0.0)
    if not precisions:
        return 1.0  # both empty
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def qa_parts(line: str) -> tuple[str, str] | None:
    """A QA line "Q: question A: answer" split at its last "A:" into its prompt ("Q: question A:") and its answer,
    both stripped; None when it has no "A:". The one reading of a dream's question and answer that grounding,
    the teacher's verifier and the answers-only fit share."""
    question, marker, answer = line.rpartition("A:")
    return (f"{question}{marker}".strip(), answer.strip()) if marker else None


def answer_in_passage(qa_line: str, passage: str) -> bool:
    """Whether a QA line's answer (after its last "A:") is whole words of `passage`, normalised.

    A verifier on the passage a dream was written from: a faithful self-edit passes; an
    answer from elsewhere (a misreading, a made-up person) does not. It is an upper bound
    on faithfulness: an answer naming another fact of the same passage still passes.
    evals/dreams.py counts "grounded" dreams by the same rule."""
    parts = qa_parts(qa_line)
    words = normalize_answer(parts[1]) if parts else ""
    return bool(words) and f" {words} " in f" {normalize_answer(passage)} "
