"""The starter kit's parser semantics, case by case (its `parsers.py`: AIcrowd's amazon-kdd-cup-2024-starter-kit,
mirrored at github.com/Keita18/amazon-kdd-cup-2024-starter-kit)."""

import pytest

from shoptune.errors import ShoptuneError
from shoptune.evaluate.parsers import (
    MAX_RESPONSE_CHARS,
    parse_multiple_choice,
    parse_ner,
    parse_ranking,
    parse_response,
    parse_retrieval,
)
from shoptune.schema import TaskType


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("2", 2),
        (" 2", 2),
        ("\n 3", 3),
        ("3. a chair", 3),
        ("Answer: 2", -1),
        ("(2)", -1),
        ("12", 1),
        ("１", 1),
        ("²", -1),
        ("", -1),
        ("   \n\t ", -1),
        ("B", -1),
    ],
)
def test_multiple_choice(response, expected):
    assert parse_multiple_choice(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("[1, 2, 3, 4, 5]", [1, 2, 3, 4, 5]),
        ("The answer is: 1, 2, 3, 4, 5", [1, 2, 3, 4, 5]),
        ("1 2", []),
        ("1. a\n2. b", []),
        ("1, 2, 2, 3", []),
        ("2, 10, 1", [2, 1]),
        ("3,1,2,5,4,1", [3, 1, 2, 5, 4]),
        ("0, 1, 2", [0, 1, 2]),
        ("", []),
        ("5,4", [5, 4]),
    ],
)
def test_ranking(response, expected):
    assert parse_ranking(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("[6, 9, 15]", [6, 9, 15]),
        ("6 9 15", []),
        ("Products 3, 8 and 9", [3]),
        ("6, 6, 9", [6, 6, 9]),
        ("1,2,3,4,5", [1, 2, 3]),
        ("", []),
    ],
)
def test_retrieval(response, expected):
    assert parse_retrieval(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("['New York', 'Amazon']", ["New York", "Amazon"]),
        ("New York, Amazon", ["New York", "Amazon"]),
        ("[New York, Amazon]", ["[New York", "Amazon]"]),
        ("'a', 'b'", ["'a'", "'b'"]),
        ("[1, 2]", ["[1", "2]"]),
        (" a ,, b ,", ["a", "b"]),
        ("", []),
    ],
)
def test_ner(response, expected):
    assert parse_ner(response) == expected


def test_generation_strips_only_surrounding_whitespace():
    assert parse_response("  Ein Stuhl\n zwei \n", TaskType.GENERATION) == "Ein Stuhl\n zwei"


def test_responses_are_cut_to_5000_characters():
    # A sixth item beyond the cut must not void the ranking through the duplicate rule.
    response = "1,2,3" + " " * (MAX_RESPONSE_CHARS - 5) + ",1"
    assert parse_response(response, TaskType.RETRIEVAL) == [1, 2, 3]
    assert parse_response("x" * (MAX_RESPONSE_CHARS + 10), TaskType.GENERATION) == "x" * MAX_RESPONSE_CHARS


def test_non_string_response_is_an_error():
    with pytest.raises(ShoptuneError, match="must be a string"):
        parse_response(3, TaskType.MULTIPLE_CHOICE)
