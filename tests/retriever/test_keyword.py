"""The keyword analyzer on Chinese, Japanese, Korean, Latin and mixed text; fusion by script."""

from __future__ import annotations

import pytest

from retriever.fusion import dense_weight
from retriever.keyword import analyze, bm25_document, bm25_query, cjk_share, script_of, term_id


def test_english_is_stemmed_and_stop_words_dropped() -> None:
    terms, words = analyze("The runners were running quickly to the station")
    assert terms == ["runner", "were", "run", "quick", "station"]
    assert words == len(terms)


def test_chinese_gives_characters_and_character_bigrams() -> None:
    terms, words = analyze("北京大学位于海淀区")
    assert set("北京大学位于海淀区") <= set(terms)
    # Every overlapping pair, so two-character words match however a question cuts them.
    assert {"北京", "京大", "大学", "学位", "位于", "海淀", "淀区"} <= set(terms)
    # BM25's length counts a Chinese word as two characters, not each term.
    assert words == 5


def test_a_chinese_sentence_is_no_longer_one_word() -> None:
    # The old analyzer's [^\W_]+ made this whole sentence a single term.
    assert "北京大学位于海淀区" not in analyze("北京大学位于海淀区")[0]


def test_japanese_and_korean_get_bigrams() -> None:
    assert {"タワ", "ワー"} <= set(analyze("タワー")[0])
    assert analyze("한국어")[0] == ["한국", "국어"]


def test_mixed_text_keeps_each_script_its_own_analysis() -> None:
    terms, _ = analyze("iPhone 15 的电池续航 Battery running")
    assert {"iphon", "15", "batteri", "run"} <= set(terms)  # Latin: stemmed
    assert {"电池", "续航", "池续"} <= set(terms)  # Chinese: words and bigrams
    assert "the" not in analyze("the 电池")[0]


def test_script_detection() -> None:
    assert script_of("How long do cats sleep?") == "latin"
    assert script_of("猫每天睡多久？") == "cjk"
    # A Chinese question naming an English product is still read as Chinese.
    assert script_of("iPhone 15 的电池续航怎么样") == "cjk"
    assert cjk_share("12345 !!") == 0.0


def test_chinese_query_matches_a_chinese_document_in_bm25_vectors() -> None:
    doc = bm25_document("北京大学位于北京市海淀区，是一所综合性大学。")
    query = bm25_query("北京大学在哪个区？")
    assert set(query.indices) & set(doc.indices)
    assert term_id("大学") in doc.indices and term_id("海") in doc.indices
    assert doc.indices == sorted(doc.indices) and all(v > 0 for v in doc.values)


@pytest.mark.parametrize(
    ("query", "expected"),
    [("How long do cats sleep?", 0.45), ("猫每天睡多久", 0.05), ("", 0.45)],
)
def test_dense_weight_follows_the_query_script(query: str, expected: float) -> None:
    assert dense_weight(query, latin=0.45, cjk=0.05) == pytest.approx(expected)


def test_mixed_query_gets_a_blend() -> None:
    weight = dense_weight("cat 猫", latin=0.4, cjk=0.0)
    assert 0.0 < weight < 0.4


def test_english_terms_are_those_of_the_english_only_analyzer() -> None:
    # SciFact's rankings stay what they were only if English text gives the same terms
    # and lengths as the analyzer before CJK support: lower-cased [^\W_]+ words, English
    # stop words dropped, Snowball-stemmed (checked here on a slice; on all 5,183 SciFact
    # documents and 809 train queries when this was written).
    import json
    import re

    from bm25s.stopwords import STOPWORDS_EN
    from nltk.stem.snowball import SnowballStemmer

    from tests.retriever.conftest import SCIFACT

    if not SCIFACT.is_dir():
        pytest.skip(f"SciFact data not found at {SCIFACT}")
    stem = SnowballStemmer("english").stem
    word = re.compile(r"[^\W_]+", re.UNICODE)
    with (SCIFACT / "corpus.jsonl").open() as corpus:
        texts = [f"{d['title']}\n{d['text']}" for d in map(json.loads, list(corpus)[:300])]
    for text in texts:
        old = [stem(w) for w in word.findall(text.lower()) if w not in STOPWORDS_EN]
        terms, words = analyze(text)
        assert terms == old and words == len(old)
