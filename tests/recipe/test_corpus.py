"""Malformed recipes: each file in corpus/ states the exact problems it must produce.

A line `# expect: FILE:LINE:COL: key.path: message` per problem, in order. Positions
are those of the YAML nodes, also when the problem sits in a base recipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mdeploy.errors import RecipeError
from mdeploy.recipe import load_recipe

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(CORPUS.glob("[0-9]*.yaml"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_malformed_recipe(case: Path, monkeypatch):
    monkeypatch.chdir(CORPUS)
    expected = [line[len("# expect: "):].rstrip("\n") for line in case.read_text().splitlines() if line.startswith("# expect: ")]
    assert expected, f"{case.name} states no expectation"
    with pytest.raises(RecipeError) as caught:
        load_recipe(case.name)
    assert [issue.render() for issue in caught.value.issues] == expected
