"""The offline sentence splitter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.sentences import split_sentences


def test_splits_sentences_and_paragraphs():
    text = "Mr. Jones disagreed. Mrs. Brown agreed.\nThe U.S. economy grew 3.5% in 2019. It cost $3.50!\n\nLast one?"
    assert split_sentences(text) == [
        "Mr. Jones disagreed.",
        "Mrs. Brown agreed.",
        "The U.S. economy grew 3.5% in 2019.",
        "It cost $3.50!",
        "Last one?",
    ]
    assert split_sentences("東京は日本の首都です。大阪は第二の都市です。") == ["東京は日本の首都です。", "大阪は第二の都市です。"]
    assert split_sentences("") == [] and split_sentences(" \n\n ") == []
    assert split_sentences("Ends with a title, Dr.") == ["Ends with a title, Dr."]
    assert split_sentences("He met Dr.\nNew line. Line\r\nbreaks count") == ["He met Dr.", "New line.", "Line", "breaks count"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab .!?\nÄ東。\"'") + ["Mr.", "Dr. ", "3.5", "\u00a0"]), max_size=80))
def test_no_text_is_lost_or_reordered(pieces):
    text = "".join(pieces)
    sentences = split_sentences(text)
    assert all(s and s == s.strip() and "\n" not in s for s in sentences)
    assert "".join("".join(sentences).split()) == "".join(text.split())
