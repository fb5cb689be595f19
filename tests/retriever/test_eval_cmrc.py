"""retriever.eval on a CMRC2018-style (SQuAD-format) Chinese file, with the bm25s peer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retriever.eval import main
from retriever.eval_data import load_cmrc
from retriever.eval_peer import BigramBM25, char_ngrams

PASSAGES = {
    "p1": ("长城", "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。"),
    "p2": ("熊猫", "大熊猫主要生活在四川的山区，以竹子为主要食物，是中国的国宝。"),
    "p3": ("咖啡", "Espresso 是一种浓缩咖啡，起源于意大利，用九个大气压的热水冲煮。"),
}
QUESTIONS = {
    "q1": ("长城全长多少公里？", "p1"),
    "q2": ("大熊猫吃什么？", "p2"),
    "q3": ("Espresso 起源于哪个国家？", "p3"),
}


@pytest.fixture
def cmrc_file(tmp_path: Path) -> Path:
    """Three passages and a question for each, in CMRC2018's SQuAD layout."""
    data = {
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "id": pid,
                        "context": context,
                        "qas": [
                            {"id": qid, "question": q, "answers": []}
                            for qid, (q, target) in QUESTIONS.items()
                            if target == pid
                        ],
                    }
                ],
            }
            for pid, (title, context) in PASSAGES.items()
        ]
    }
    path = tmp_path / "cmrc" / "trial.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_cmrc_loads_passages_as_the_corpus(cmrc_file: Path) -> None:
    data = load_cmrc(cmrc_file)
    assert [d["_id"] for d in data.corpus] == ["p1", "p2", "p3"]
    assert data.qrels == {"q1": {"p1": 1}, "q2": {"p2": 1}, "q3": {"p3": 1}}


def test_the_peer_uses_character_unigrams_and_bigrams(cmrc_file: Path) -> None:
    assert char_ngrams("长城 Great") == ["长", "城", "长城", "great"]
    data = load_cmrc(cmrc_file)
    peer = BigramBM25([d["_id"] for d in data.corpus], [d["text"] for d in data.corpus])
    assert peer.search("大熊猫吃什么", 1)[0][0] == "p2"


def test_eval_cli_on_chinese_with_the_peer(
    cmrc_file: Path,
    eval_settings: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--cmrc", str(cmrc_file), "--peer", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["queries"] == 3
    assert report["ndcg@10"] == pytest.approx(1.0)
    assert report["peer"]["ndcg@10"] == pytest.approx(1.0)
