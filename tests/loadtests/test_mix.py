"""The traffic mix: fractions, the login share from the token lifetime, the realised-mix check."""

from __future__ import annotations

import ast
import re

import pytest

from loadtests.sizing import mix
from loadtests.sizing.run import LOCUSTFILE


def test_login_fraction_is_one_login_per_token_lifetime_of_a_client() -> None:
    assert mix.login_fraction(900, 1.0) == 1 / 900
    assert mix.login_fraction(600, 0.5) == 1 / 300
    with pytest.raises(mix.MixError):
        mix.login_fraction(0, 1)


def test_build_scales_the_rest_around_the_login_share() -> None:
    built = mix.build({"me": 1, "list_items": 3}, login=0.2)

    assert built == {"me": 0.2, "list_items": 0.6000000000000001, "login": 0.2}
    assert sum(built.values()) == pytest.approx(1)
    with pytest.raises(mix.MixError, match="unknown operations"):
        mix.build({"health": 1}, 0)
    with pytest.raises(mix.MixError):
        mix.build({"me": 0}, 0)


def test_encode_and_decode_round_trip() -> None:
    text = mix.encode({"me": 0.25, "login": 0.001})

    assert text == "me=0.25,login=0.001"
    assert mix.decode(text) == {"me": 0.25, "login": 0.001}
    with pytest.raises(mix.MixError):
        mix.decode("me:0.2")


def test_the_locustfile_default_mix_is_the_sizing_default() -> None:
    # The locustfile stays self-contained (a ConfigMap ships it alone), so it repeats the mix.
    found = re.search(r"DEFAULT_MIX = \((.*?)\)", LOCUSTFILE.read_text(), re.S)
    assert found is not None
    text = "".join(re.findall(r'"([^"]*)"', found.group(1)))

    assert mix.decode(text) == mix.DEFAULT_FRACTIONS


def test_the_api_key_operations_are_the_locustfiles() -> None:
    # infra/config.py charges these to the seeded key's tier and the rest to the accounts.
    tree = ast.parse(LOCUSTFILE.read_text())
    (arrivals,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Arrivals"]
    journeys = {n.name: ast.unparse(n) for n in arrivals.body if isinstance(n, ast.FunctionDef)}
    operations = set(mix.CLASSES) - {"login"}
    assert operations <= set(journeys)
    with_key = {op for op in operations if "X-API-Key" in journeys[op]}
    assert with_key == mix.API_KEY_OPERATIONS
    assert set(mix.DEFAULT_FRACTIONS) >= mix.API_KEY_OPERATIONS


def test_a_deviation_counts_beyond_two_points_and_beyond_chance() -> None:
    intended = {"me": 0.5, "list_items": 0.5}

    # 10,000 requests: three standard errors are 1.5 points, so 2 points decide.
    assert mix.mix_deviations(intended, {"me": 5300, "list_items": 4700}) == {
        "list_items": -0.03,
        "me": 0.03,
    }
    assert mix.mix_deviations(intended, {"me": 5150, "list_items": 4850}) == {}
    # 100 requests: 3 points is chance (three standard errors are 15 points).
    assert mix.mix_deviations(intended, {"me": 53, "list_items": 47}) == {}
    # An operation that never ran is off by its whole share.
    assert mix.mix_deviations(intended, {"me": 10_000}) == {"list_items": -0.5, "me": 0.5}
