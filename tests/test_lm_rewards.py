"""Imitation reward, judge and chrF on hand-made cases."""

from __future__ import annotations

import pytest

from somna.evals.dreams import Dream
from somna.learners.text.rewards import (
    abs_reward,
    answer_in_passage,
    chrf,
    exact_match,
    imitation_reward,
    levenshtein,
    normalized_distance,
    qa_parts,
    same_meaning,
)


def test_levenshtein_hand_cases():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert normalized_distance("kitten", "sitting") == pytest.approx(3 / 7)


def test_reward_identical_near_far():
    target = "tone lives in ralu."
    assert imitation_reward(target, target, gamma=0.5, z0=0.5) == 1.0
    near = "tone lives in ralo."  # one substitution in 19 characters
    assert abs_reward(near, target, z0=0.5) == pytest.approx(1 - 1 / 19)
    assert imitation_reward(near, target, gamma=0.5, z0=0.5) == pytest.approx(0.5 * (1 - 1 / 19))
    far = "zzzz"
    assert abs_reward(far, target, z0=0.5) == 0.0  # distance 18/19 > z0
    assert imitation_reward(far, target, gamma=0.5, z0=0.5) == 0.0


def test_semantic_judge_accepts_reordered_words_only():
    assert same_meaning("Ralu is where tone lives", "tone lives: where is ralu")
    assert not same_meaning("tone lives in ralu", "tone lives in kemo")
    reordered = "in ralu tone lives"
    reward_with_judge = imitation_reward(reordered, "tone lives in ralu", gamma=1.0, z0=0.5)
    reward_without = imitation_reward(reordered, "tone lives in ralu", gamma=0.0, z0=0.5)
    assert reward_with_judge == 1.0 and reward_without < 1.0


def test_exact_match_normalises_case_and_punctuation():
    assert exact_match(" Ralu. ", "ralu") == 1.0
    assert exact_match("ralu x", "ralu") == 0.0


def test_chrf_hand_cases():
    assert chrf("gose mutu", "gose mutu") == 1.0
    assert chrf("xyz", "abc") == 0.0
    # "ab" vs "abc": unigrams P=1, R=2/3; bigrams P=1, R=1/2; trigram: none in hyp -> P=0, R=0
    precision, recall = (1 + 1 + 0) / 3, (2 / 3 + 1 / 2 + 0) / 3
    assert chrf("ab", "abc", max_order=3) == pytest.approx(5 * precision * recall / (4 * precision + recall))


@pytest.mark.parametrize(
    "line, parts",
    [
        ("Q: which pet does Segu keep? A: cat ", ("Q: which pet does Segu keep? A:", "cat")),
        ("Q: what does A: mean? A: an answer", ("Q: what does A: mean? A:", "an answer")),  # the last marker splits
        ("Q: which pet does Segu keep? A:", ("Q: which pet does Segu keep? A:", "")),
        ("Segu keeps a cat", None),
    ],
)
def test_a_qa_line_splits_at_its_last_answer_marker(line, parts):
    assert qa_parts(line) == parts


@pytest.mark.parametrize(
    "qa_line, grounded",
    [
        ("Q: which pet does Segu keep? A: cat", True),
        ("Q: who is the friend of Segu? A: pula bo.", True),  # case and punctuation ignored
        ("Q: who is the friend of Segu? A: Pul", False),  # whole words only
        ("Q: who is the friend of Fegu? A: Disu", False),  # an answer from elsewhere
        ("Q: which pet does Segu keep? A:", False),  # no answer
        ("Segu keeps a cat", False),  # not a QA line
    ],
)
def test_a_dream_is_grounded_when_its_answer_is_words_of_its_passage_for_dreaming_and_the_report(qa_line, grounded):
    passage = "Segu keeps a cat at home. The best friend of Segu is Pula-Bo."
    assert answer_in_passage(qa_line, passage) is grounded
    assert Dream(0, 0, passage, qa_line, 0.0, True, 1.0, 0.0).grounded is grounded  # evals/dreams.py restates the rule
