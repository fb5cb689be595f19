from rl_trainer.rewards import (
    REWARDS,
    answer_overlap,
    build_rewards,
    citation_validity,
    exact_answer,
    final_number,
    honest_not_in_documents,
    leading_citation,
    repetition,
    soft_overlong,
)


def test_citation_validity_counts_only_numbers_that_exist() -> None:
    answers = [
        "Paris [1].",
        "Paris [1][3].",  # [3] does not exist among 2 sources
        "Paris.",  # sources given, none cited
        [{"role": "assistant", "content": "Paris [2]"}],  # conversational form
        "Hello!",  # no sources, no citation: nothing to check
        "See [1].",  # no sources, yet a citation: invalid
    ]
    assert citation_validity(answers, num_sources=[2, 2, 2, 2, 0, 0]) == [
        1.0,
        0.5,
        0.0,
        1.0,
        None,
        0.0,
    ]


def test_leading_citation_wants_a_valid_marker_first() -> None:
    got = leading_citation(
        ["[1] Paris", " [2] x", "Paris [1]", "[7] x", "\n\n"], num_sources=[1, 2, 1, 3, 1]
    )
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_honest_not_in_documents_rewards_refusing_only_when_unanswerable() -> None:
    refusal = "Sorry, the answer is not in the documents."
    answer = "Water boils at 100 degrees [1]."
    got = honest_not_in_documents(
        [refusal, answer, refusal, answer, answer], answerable=[False, False, True, True, None]
    )
    assert got == [1.0, 0.0, 0.0, 1.0, None]


def test_answer_overlap_is_token_f1_against_the_users_correction() -> None:
    fixed = "Water boils at 100 degrees Celsius at sea level [1]."
    got = answer_overlap(
        [
            "Water boils at 100 degrees Celsius at sea level [2].",  # same words: F1 1
            "It boils at 100 degrees.",  # part of it
            "Paris is in France.",  # nothing shared
            "Water boils at 100 degrees.",  # no correction: no verdict
            "Water boils.",  # the correction declines: honest_not_in_documents judges it
        ],
        answer=[fixed, fixed, fixed, None, "That is not in the documents."],
    )
    assert got[0] == 1.0 and got[2] == 0.0 and got[3:] == [None, None]
    assert got[1] is not None and 0.4 < got[1] < 0.8


def test_repetition_penalises_a_looping_tail_only() -> None:
    loop = "The answer is that the answer is the answer is. " * 6
    got = repetition(["Water boils at 100 degrees [1].", loop])
    assert got == [0.0, -1.0]


def test_soft_overlong_is_zero_then_linear_then_minus_one() -> None:
    ids = [[0] * n for n in (10, 12, 14, 16, 20)]
    got = soft_overlong(["x"] * 5, completion_ids=ids, max_length=16, buffer=4)
    assert got == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_exact_answer_compares_final_numbers() -> None:
    ref = "48/2 = 24 in May.\n48+24 = 72 altogether.\n#### 72"
    got = exact_answer(
        ["So the total is 72.", "#### 72", "The answer is 1,072", "#### 24", "no idea"],
        answer=[ref, ref, "#### 1072", ref, ref],
    )
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert exact_answer(["72"], answer=[None]) == [None]
    assert final_number("It costs $3.50.") == "3.5"


def test_build_rewards_binds_parameters_and_keeps_names() -> None:
    funcs, weights = build_rewards(
        {"soft_overlong": 0.5, "citation_validity": 1.0}, max_completion_length=8, overlong_buffer=2
    )
    assert [f.__name__ for f in funcs] == ["soft_overlong", "citation_validity"]
    assert weights == [0.5, 1.0]
    assert funcs[0](["x"], completion_ids=[[0] * 7]) == [-0.5]
    assert set(REWARDS) >= {
        "citation_validity",
        "exact_answer",
        "soft_overlong",
        "answer_overlap",
        "repetition",
        "honest_not_in_documents",
    }


def test_unknown_or_judgeless_rewards_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        build_rewards({"nope": 1.0})
    with pytest.raises(ValueError, match="needs a judge"):
        build_rewards({"judge": 1.0})
