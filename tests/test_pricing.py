"""Prices: OpenCode's catalogue and tiers, overrides, genai-prices, cost modes, unpriced models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import storegen
from conftest import stats, write_store
from ocsight.pricing.catalogue import Catalogue

TIERED = """
[acme.tiered]
input = 1
output = 2
context_over_200k = { input = 5, output = 5 }

[[acme.tiered.tiers]]
input = 3
output = 3
tier = { type = "context", size = 272000 }

[[acme.tiered.tiers]]
input = 4
output = 4
tier = { type = "context", size = 500000 }

[acme.small-tier]
input = 1
output = 1
context_over_200k = { input = 5, output = 5 }

[[acme.small-tier.tiers]]
input = 2
output = 2
tier = { type = "context", size = 128000 }

[acme.sonnet]
input = 3
output = 15
cache_read = 0.3
cache_write = 3.75
context_over_200k = { input = 6, output = 22.5, cache_read = 0.6, cache_write = 7.5 }

[acme.no-cache-price]
input = 1
output = 2

[acme.reasoner]
input = 1
output = 10
"""


def _estimate(cli, tmp_path: Path, model: str, **tok) -> float:
    """The estimated cost of one message of `model`, through `stats --cost-mode calculate`."""
    prices = tmp_path / "prices.toml"
    prices.write_text(TIERED)
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(**tok), provider="acme", model=model)
    root = write_store(b.plan, tmp_path / f"{model}-{len(list(tmp_path.iterdir()))}", "db")
    doc = stats(cli, "--cost-mode", "calculate", "--prices", str(prices), "--data-dir", str(root))
    return doc["totals"]["cost"]["estimated_usd"]


@pytest.mark.parametrize(("prompt", "rate"), [(200_000, 3), (200_001, 6)])
def test_over_200k_price_applies_above_200k_prompt_tokens(cli, tmp_path: Path, prompt, rate):
    assert _estimate(cli, tmp_path, "sonnet", input=prompt) == pytest.approx(prompt * rate / 1e6)


def test_prompt_size_counts_cache_reads_and_writes_as_opencode_does(cli, tmp_path: Path):
    got = _estimate(cli, tmp_path, "sonnet", input=100_000, cache_read=90_000, cache_write=10_001)
    assert got == pytest.approx((100_000 * 6 + 90_000 * 0.6 + 10_001 * 7.5) / 1e6)


@pytest.mark.parametrize(
    ("prompt", "rate"),
    [(150_000, 1), (250_000, 5), (300_000, 3), (600_000, 4)],  # 250k: OpenCode's over-200k before the first tier
)
def test_largest_exceeded_tier_wins_and_over_200k_only_applies_when_no_tier_does(cli, tmp_path: Path, prompt, rate):
    assert _estimate(cli, tmp_path, "tiered", input=prompt) == pytest.approx(prompt * rate / 1e6)


def test_a_tier_below_200k_beats_the_over_200k_price(cli, tmp_path: Path):
    assert _estimate(cli, tmp_path, "small-tier", input=250_000) == pytest.approx(250_000 * 2 / 1e6)


def test_missing_cache_prices_cost_nothing_as_in_opencode(cli, tmp_path: Path):
    assert _estimate(cli, tmp_path, "no-cache-price", cache_read=1_000_000, cache_write=1_000_000) == 0


def test_reasoning_is_billed_at_the_output_price(cli, tmp_path: Path):
    assert _estimate(cli, tmp_path, "reasoner", output=1_000, reasoning=500) == pytest.approx(0.015)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")
def test_genai_prices_tiers_become_rates_by_prompt_size():
    from genai_prices.types import ModelPrice, Tier, TieredPrices

    from ocsight.pricing.genai import price_of

    model = ModelPrice(input_mtok=TieredPrices(Decimal(3), [Tier(200_000, Decimal(6))]),
                       output_mtok=TieredPrices(Decimal(15), [Tier(200_000, Decimal("22.5"))]),
                       cache_read_mtok=None,  # genai-prices bills an unpriced cache as input
                       cache_write_mtok=Decimal("3.75"))
    price = price_of(model)
    assert [(r.size, r.input, r.output, r.cache_read, r.cache_write) for r in price.rates] == [
        (-1, 3, 15, 3, 3.75), (200_000, 6, 22.5, 6, 3.75),
    ]


def test_estimates_equal_the_costs_opencode_stored_for_modern_eras(cli, tmp_path: Path, models_json):
    plan = storegen.plan_store(seed=31, sessions=60, eras=("1.15", "1.18"))
    assert any(sum(plan.truth[m["id"]]["tokens"][k] for k in ("input", "cache_read", "cache_write")) > 200_000
               for m in plan.messages if m["role"] == "assistant" and "error" not in m), "needs long-context calls"
    root = write_store(plan, tmp_path / "s", "db")
    stored = {(g["provider"], g["model"]): g for g in stats(cli, "--cost-mode", "stored", "--data-dir", str(root))["by_model"]}
    calc = {(g["provider"], g["model"]): g for g in stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))["by_model"]}
    for pair, g in calc.items():
        if pair[0] in storegen.PRICES and pair[0] not in ("opencode", "github-copilot"):
            assert g["cost"]["estimated_usd"] == pytest.approx(stored[pair]["cost"]["stored_usd"], rel=1e-9), pair


def test_auto_mode_uses_stored_cost_and_estimates_only_zero_cost_messages(cli, tmp_path: Path, models_json):
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(1_000_000, total=1_000_000), cost=9.99)
    b.assistant(s, storegen.BASE_MS + 1, storegen.tokens(1_000_000, total=1_000_000), cost=0,
                provider="openai", model="gpt-5")
    doc = stats(cli, "--data-dir", str(write_store(b.plan, tmp_path / "a", "db")))
    cost = doc["totals"]["cost"]
    assert cost["stored_usd"] == 9.99
    assert cost["estimated_usd"] == pytest.approx(1.25)  # gpt-5 input: $1.25 per 1M
    assert cost["usd"] == pytest.approx(11.24)
    assert cost["unpriced_messages"] == 0


def test_stored_mode_never_estimates(cli, tmp_path: Path, models_json):
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(1_000_000, total=1_000_000), cost=0, provider="openai",
                model="gpt-5")
    doc = stats(cli, "--cost-mode", "stored", "--data-dir", str(write_store(b.plan, tmp_path / "a", "db")))
    assert doc["totals"]["cost"] == {"usd": 0.0, "stored_usd": 0.0, "estimated_usd": 0.0, "unpriced_messages": 0}


def test_unknown_model_is_counted_and_named_never_costed_at_zero(cli, tmp_path: Path, models_json):
    b = storegen.Builder()
    s = b.session(b.project())
    for i in range(3):
        b.assistant(s, storegen.BASE_MS + i, storegen.tokens(500, 50, total=550), provider="acme", model="mystery-1")
    b.assistant(s, storegen.BASE_MS + 9, storegen.tokens(0, 0, total=0), provider="acme", model="mystery-1",
                error="APIError")  # nothing to price: not unpriced
    doc = stats(cli, "--data-dir", str(write_store(b.plan, tmp_path / "u", "db")))
    assert doc["totals"]["cost"]["unpriced_messages"] == 3
    assert doc["unpriced_models"] == [{"provider": "acme", "model": "mystery-1", "messages": 3}]
    assert {"provider": "acme", "model": "mystery-1", "source": None} in doc["pricing"]["models"]


def test_free_models_in_the_catalogue_are_priced_at_zero_not_unpriced(cli, tmp_path: Path, models_json):
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(500, 50, total=550), provider="opencode", model="grok-code")
    doc = stats(cli, "--data-dir", str(write_store(b.plan, tmp_path / "f", "db")))
    assert doc["totals"]["cost"]["unpriced_messages"] == 0
    assert doc["totals"]["cost"]["usd"] == 0


def _one_message_store(tmp_path: Path, provider: str, model: str, kind: str = "db", **tok) -> Path:
    b = storegen.Builder()
    s = b.session(b.project())
    b.assistant(s, storegen.BASE_MS, storegen.tokens(**tok), provider=provider, model=model)
    return write_store(b.plan, tmp_path / f"{provider}-{model}", kind)


def test_overrides_file_prices_a_model_no_catalogue_knows(cli, tmp_path: Path, models_json):
    prices = tmp_path / "prices.toml"
    prices.write_text('[acme."mystery-1"]\ninput = 2.0\noutput = 8.0\ncache_read = 0.5\n')
    root = _one_message_store(tmp_path, "acme", "mystery-1", input=1_000, output=100, cache_read=2_000, total=3_100)
    doc = stats(cli, "--prices", str(prices), "--data-dir", str(root))
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx((1_000 * 2 + 100 * 8 + 2_000 * 0.5) / 1e6)
    assert doc["totals"]["cost"]["unpriced_messages"] == 0
    assert {"provider": "acme", "model": "mystery-1", "source": "overrides"} in doc["pricing"]["models"]


def test_overrides_beat_opencodes_catalogue(cli, tmp_path: Path, models_json):
    (Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight").mkdir()
    (Path(os.environ["XDG_CONFIG_HOME"]) / "ocsight" / "prices.json").write_text(
        json.dumps({"openai": {"gpt-5": {"input": 100, "output": 0}}}))
    root = _one_message_store(tmp_path, "openai", "gpt-5", input=1_000_000, total=1_000_000)
    doc = stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx(100)


def test_custom_provider_prices_from_opencode_config_are_used(cli, tmp_path: Path):
    cfg = Path(os.environ["XDG_CONFIG_HOME"]) / "opencode"
    cfg.mkdir()
    (cfg / "opencode.jsonc").write_text(
        '{\n  // my local model\n  "provider": {"mock": {"models": {"mock-model": {"cost": {"input": 3, "output": 15,}}}}},\n}')
    root = _one_message_store(tmp_path, "mock", "mock-model", input=1_000_000, output=1_000_000, total=2_000_000)
    doc = stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx(18)
    assert doc["pricing"]["models"] == [{"provider": "mock", "model": "mock-model", "source": "opencode-config"}]


@pytest.mark.parametrize("command", ["stats", "analyze", "daily", "monthly", "session"])
def test_a_malformed_opencode_config_is_a_note_on_every_run_not_only_the_one_that_read_it(cli, tmp_path: Path,
                                                                                        monkeypatch, command):
    config = tmp_path / "opencode.json"
    config.write_text('{"provider": {"mock": ')
    monkeypatch.setenv("OPENCODE_CONFIG", str(config))
    root = _one_message_store(tmp_path, "mock", "mock-model", input=10, total=10)
    for run in ("first", "cached"):
        r = cli(command, "--data-dir", str(root))
        assert r.code == 0, r.err
        notes = [line for line in r.out.splitlines() if line.startswith("Note: unreadable OpenCode config")]
        assert len(notes) == 1 and str(config) in notes[0], (run, r.out)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")
def test_genai_prices_is_the_fallback_catalogue(cli, tmp_path: Path):
    root = _one_message_store(tmp_path, "anthropic", "claude-sonnet-4-5-20250929", input=100_000, total=100_000)
    doc = stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))
    assert doc["pricing"]["models"][0]["source"] == "genai-prices"
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx(0.3)  # $3 per 1M below 200k tokens


@pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")
def test_genai_prices_tiers_apply_above_their_prompt_size_end_to_end(cli, tmp_path: Path):
    root = _one_message_store(tmp_path, "anthropic", "claude-sonnet-4-5", input=150_000, cache_read=60_000,
                              total=210_000)
    doc = stats(cli, "--cost-mode", "calculate", "--data-dir", str(root))
    assert doc["totals"]["cost"]["estimated_usd"] == pytest.approx((150_000 * 6 + 60_000 * 0.6) / 1e6)


def test_changing_a_price_source_re_estimates_a_cached_index(cli, tmp_path: Path, models_json):
    prices = tmp_path / "prices.toml"
    prices.write_text('[acme."mystery-1"]\ninput = 1.0\noutput = 0\n')
    root = _one_message_store(tmp_path, "acme", "mystery-1", input=1_000_000, total=1_000_000)
    assert stats(cli, "--prices", str(prices), "--data-dir", str(root))["totals"]["cost"]["usd"] == pytest.approx(1)
    prices.write_text('[acme."mystery-1"]\ninput = 4.0\noutput = 0\n')
    os.utime(prices, ns=(1, 10**18))  # a new stamp even on coarse file systems
    assert stats(cli, "--prices", str(prices), "--data-dir", str(root))["totals"]["cost"]["usd"] == pytest.approx(4)


def test_bad_overrides_file_is_a_one_line_error(cli, tmp_path: Path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[acme."mystery-1"]\ninput = "cheap"\n')
    root = _one_message_store(tmp_path, "acme", "mystery-1", input=10, total=10)
    r = cli("stats", "--json", "--prices", str(prices), "--data-dir", str(root))
    assert r.code == 2
    assert r.err.count("\n") == 1 and "prices.toml" in r.err and "input" in r.err


def test_missing_overrides_file_is_a_one_line_error(cli, tmp_path: Path):
    root = _one_message_store(tmp_path, "acme", "mystery-1", input=10, total=10)
    r = cli("stats", "--json", "--prices", str(tmp_path / "nope.toml"), "--data-dir", str(root))
    assert r.code == 2 and "nope.toml" in r.err and r.err.count("\n") == 1


def test_costs_sum_exactly_whatever_the_order_of_messages(cli, tmp_path: Path):
    b = storegen.Builder()
    s = b.session(b.project())
    costs = [0.1, 0.2, 0.3, 1e-7, 12345.678901]
    for i, c in enumerate(costs):
        b.assistant(s, storegen.BASE_MS + i, storegen.tokens(1, total=1), cost=c)
    doc = stats(cli, "--data-dir", str(write_store(b.plan, tmp_path / "c", "db")))
    exact = sum(Decimal(str(c)) for c in costs)  # 12346.2789011
    assert Decimal(repr(doc["totals"]["cost"]["stored_usd"])) == exact


GENAI_PAIRS = [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5"), ("acme", "mystery-1")]
needs_genai = pytest.mark.skipif(sys.version_info < (3, 11), reason="genai-prices needs Python 3.11")


@needs_genai
def test_genai_prices_answers_the_models_no_other_source_knows():
    from ocsight.pricing import genai

    answers = Catalogue().resolve_all(GENAI_PAIRS)
    assert answers == {pair: genai.lookup(*pair) for pair in GENAI_PAIRS}
    assert answers[("anthropic", "claude-sonnet-4-5")].source == "genai-prices"
    assert answers[("acme", "mystery-1")] is None


@needs_genai
def test_a_prefetched_catalogue_answers_what_one_loaded_on_demand_answers():
    prefetched = Catalogue()
    prefetched.prefetch()
    assert prefetched.resolve_all(GENAI_PAIRS) == Catalogue().resolve_all(GENAI_PAIRS)


ASK_CACHED = """
import json, sys
from ocsight.pricing.catalogue import Catalogue
answers = Catalogue().resolve_all([tuple(p) for p in json.loads(sys.argv[1])])
print(json.dumps({"imported": "genai_prices" in sys.modules,
                  "answers": [[p, m, None if a is None else a.source] for (p, m), a in answers.items()]}))
"""


def _ask(pairs: list[tuple[str, str]]) -> dict:
    out = subprocess.run([sys.executable, "-c", ASK_CACHED, json.dumps(pairs)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@needs_genai
def test_genai_prices_answers_are_kept_so_a_later_run_does_not_load_it_again():
    first = _ask(GENAI_PAIRS)
    again = _ask(GENAI_PAIRS)
    assert first["imported"] and not again["imported"]
    assert again["answers"] == first["answers"]
    assert _ask([("acme", "another-model")])["imported"]  # a model never asked about is asked


@needs_genai
def test_the_genai_answers_cache_is_private_to_the_user():
    from ocsight.pricing import genai

    Catalogue().resolve_all(GENAI_PAIRS)
    path = genai.cache_file()
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0


def test_no_cache_keeps_no_genai_answers(cli, tmp_path: Path):
    root = _one_message_store(tmp_path, "acme", "mystery-1", "db", input=10, total=10)
    stats(cli, "--no-cache", "--data-dir", str(root))
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "ocsight").exists()
