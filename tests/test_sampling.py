"""The batch samplers: every rule of lib.sampling checked over many batches (no model, no files).

Statistical checks allow 4 binomial standard deviations: with the fixed seeds used here they
pass deterministically, and a real bias of the size they guard against would fail them.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from lib.data import ParallelGroup
from lib.batch_composition import batch_composition, batch_summary, composition_overview, language_pair_counts
from lib.sampling import (SAMPLERS, CrossLingualBatchSampler, EnglishBatchSampler, HybridBatchSampler,
                          MixedLanguageBatchSampler, MonolingualBatchSampler, PairDataset, PairIndex,
                          SamplingError, build_sampler, fitting_batch_size)

LANGUAGES = ["ar", "de", "en", "es", "hi", "vi", "zh"]


def make_groups(n: int, source: str = "toy", seed: int = 0, languages=LANGUAGES, min_languages: int = 1,
                max_languages: int = 4, distinct_qids: int | None = None) -> list[ParallelGroup]:
    """``n`` synthetic groups, each in a random subset of ``languages``; ``distinct_qids < n``
    makes several groups share a question id."""
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        k = int(rng.integers(min_languages, min(max_languages, len(languages)) + 1))
        langs = sorted(rng.choice(languages, size=k, replace=False).tolist())
        qid = f"{source}-{i % (distinct_qids or n)}"
        groups.append(ParallelGroup(
            qid=qid, source=source,
            queries={lang: f"query {qid} {lang}" for lang in langs},
            positives={lang: f"positive {qid} {lang}" for lang in langs},
            negatives={lang: [f"negative{j} {qid} {lang}" for j in range(3)] for lang in langs}))
    return groups


@pytest.fixture(scope="module")
def groups() -> list[ParallelGroup]:
    # 400 groups, 300 distinct question ids (100 ids appear twice), 1 to 4 languages each
    return make_groups(400, distinct_qids=300)


def draw(sampler, n_batches: int) -> list[list[PairIndex]]:
    batches = []
    while len(batches) < n_batches:
        for batch in sampler:
            batches.append(batch)
            if len(batches) == n_batches:
                break
    return batches


def within_binomial(count: float, trials: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p)) + 1e-9


# -- construction and errors -------------------------------------------------------------------

def test_build_sampler_returns_the_named_class(groups):
    expected = {"en": EnglishBatchSampler, "xx": MixedLanguageBatchSampler, "mono": MonolingualBatchSampler,
                "cross": CrossLingualBatchSampler, "hybrid": HybridBatchSampler}
    assert set(expected) == set(SAMPLERS)
    for name, cls in expected.items():
        sampler = build_sampler(name, groups, batch_size=8)
        assert type(sampler) is cls and sampler.name == name
        assert "sampler =" in cls.__doc__  # each class states its rule and shows its usage
        # one call builds every sampler (02_sampling): an option another sampler declares is ignored
        assert type(build_sampler(name, groups, batch_size=8, alpha=0.3)) is cls
    assert build_sampler("hybrid", groups, 8, alpha=0.3).alpha == 0.3
    with pytest.raises(SamplingError, match="sampler 'mono' has no option 'gamma' \\(its options: none\\)"):
        build_sampler("mono", groups, 8, gamma=1.0)


def test_every_sampler_documents_its_arguments_returns_references_and_an_example():
    for name in ("en", "xx", "mono", "cross", "hybrid"):
        doc = build_sampler.__globals__["SAMPLER_CLASSES"][name].__doc__
        for section in ("Args:", "Returns:", "References:", "Example::"):
            assert section in doc, (name, section)
        assert "2408.10536" in doc or "2004.05484" in doc             # the paper that defines the rule
    from lib.sampling import HybridBatchSampler as hybrid

    assert "alpha" in hybrid.params and hybrid.params["alpha"].help   # its option, with help text


def test_errors_name_the_input_and_the_fix(groups):
    with pytest.raises(SamplingError, match="unknown sampler 'random'.*en, xx, mono, cross, hybrid"):
        build_sampler("random", groups, 8)
    for alpha in (-0.1, 1.5):
        with pytest.raises(SamplingError, match=r"alpha must be in \[0, 1\]"):
            build_sampler("hybrid", groups, 8, alpha=alpha)
        with pytest.raises(SamplingError, match="alpha"):
            build_sampler("mono", groups, 8, alpha=alpha)
    # the smallest language pool: how many distinct ids it holds
    sampler = build_sampler("mono", groups, 8)
    smallest_lang, smallest = min(
        ((lang, len({groups[r].qid for r in rows})) for (_, _, lang), rows in sampler._members.items()),
        key=lambda item: item[1])
    with pytest.raises(SamplingError, match=rf"batch_size {smallest + 1} is larger than the mono pool of "
                                            rf"language '{smallest_lang}'.*{smallest} groups.*lower batch_size "
                                            rf"to at most {smallest}.*languages="):
        build_sampler("mono", groups, smallest + 1)
    no_english = make_groups(50, languages=["de", "fr"])
    with pytest.raises(SamplingError, match="needs English groups"):
        build_sampler("en", no_english, 4)
    with pytest.raises(SamplingError, match="needs English groups.*include 'en' in languages="):
        build_sampler("en", groups, 4, languages=["de", "es"])
    single = make_groups(50, max_languages=1)
    with pytest.raises(SamplingError, match="at least two languages"):
        build_sampler("cross", single, 4)
    with pytest.raises(SamplingError, match="at least two languages.*alpha=1"):
        build_sampler("hybrid", single, 4, alpha=0.5)
    assert len(draw(build_sampler("hybrid", single, 4, alpha=1.0), 3)) == 3  # mono only: fine
    with pytest.raises(SamplingError, match=r"languages \['xx'\] are in no training group"):
        build_sampler("mono", groups, 4, languages=["de", "xx"])
    with pytest.raises(SamplingError, match="source_temperature must be > 0"):
        build_sampler("mono", groups, 4, source_temperature=0)
    with pytest.raises(SamplingError, match="batch_size must be a positive integer"):
        build_sampler("mono", groups, 0)
    with pytest.raises(SamplingError, match="groups is empty"):
        build_sampler("mono", [], 4)



def test_fitting_batch_size_is_the_largest_batch_the_smallest_pool_allows(groups):
    sampler = build_sampler("hybrid", groups, 1)
    smallest = min(len({groups[r].qid for r in rows}) for rows in sampler._members.values())
    assert sampler.largest_batch_size() == smallest
    assert fitting_batch_size("hybrid", groups, 1000) == smallest
    build_sampler("hybrid", groups, smallest)  # fits
    with pytest.raises(SamplingError, match="larger than the mono pool"):
        build_sampler("hybrid", groups, smallest + 1)
    assert fitting_batch_size("hybrid", groups, 5) == 5  # a batch that fits is kept
    assert fitting_batch_size("hybrid", groups, 1000, multiple_of=4) == smallest // 4 * 4
    with pytest.raises(SamplingError, match="fewer than the 1000 processes"):
        fitting_batch_size("hybrid", groups, 8, multiple_of=1000)


# -- the rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SAMPLERS)
def test_no_question_id_twice_in_a_batch(name):
    # 3 groups per question id (e.g. the same question from several builders): the pool must skip
    many_duplicates = make_groups(240, distinct_qids=80, min_languages=2)
    sampler = build_sampler(name, many_duplicates, batch_size=12, seed=3)
    for batch in draw(sampler, 400):
        qids = [many_duplicates[pair.group].qid for pair in batch]
        assert len(qids) == len(set(qids)) == 12


def test_en_is_english_only(groups):
    sampler = build_sampler("en", groups, batch_size=8)
    english = [row for row, g in enumerate(groups) if "en" in g.languages]
    assert len(sampler) == len(english) // 8
    for batch in draw(sampler, 200):
        assert all(pair.query_lang == pair.passage_lang == "en" for pair in batch)
        assert all("en" in groups[pair.group].languages for pair in batch)


def test_xx_pairs_are_same_language_uniform_per_id_and_mix_within_a_batch(groups):
    sampler = build_sampler("xx", groups, batch_size=16, seed=1)
    batches = draw(sampler, 1000)
    pairs = [pair for batch in batches for pair in batch]
    assert all(p.query_lang == p.passage_lang and p.query_lang in groups[p.group].languages for p in pairs)
    mixed = sum(len({p.query_lang for p in batch}) > 1 for batch in batches)
    assert mixed == len(batches)
    # each pair's language is uniform over its group's languages
    observed = Counter(p.query_lang for p in pairs)
    for lang in LANGUAGES:
        probabilities = [(lang in groups[p.group].languages) / len(groups[p.group].languages) for p in pairs]
        expected = sum(probabilities)
        sd = math.sqrt(sum(q * (1 - q) for q in probabilities))
        assert abs(observed[lang] - expected) <= 4 * sd, lang


def test_mono_has_one_language_per_batch_drawn_uniformly(groups):
    sampler = build_sampler("mono", groups, batch_size=8, seed=2)
    batches = draw(sampler, 2100)
    batch_languages = []
    for batch in batches:
        langs = {p.query_lang for p in batch} | {p.passage_lang for p in batch}
        assert len(langs) == 1
        assert all(p.query_lang in groups[p.group].languages for p in batch)
        batch_languages.append(langs.pop())
    counts = Counter(batch_languages)
    assert set(counts) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert within_binomial(counts[lang], len(batches), 1 / len(LANGUAGES)), (lang, counts)


def test_cross_pairs_two_languages_of_the_id_uniform_over_ordered_pairs(groups):
    sampler = build_sampler("cross", groups, batch_size=16, seed=4)
    pairs = [pair for batch in draw(sampler, 1000) for pair in batch]
    for p in pairs:
        assert p.query_lang != p.passage_lang
        assert {p.query_lang, p.passage_lang} <= set(groups[p.group].languages)
        assert len(groups[p.group].languages) >= 2
    observed = Counter((p.query_lang, p.passage_lang) for p in pairs)
    for a, b in itertools.permutations(LANGUAGES, 2):
        probabilities = []
        for p in pairs:
            langs = groups[p.group].languages
            n = len(langs)
            probabilities.append(1 / (n * (n - 1)) if a in langs and b in langs else 0.0)
        expected = sum(probabilities)
        sd = math.sqrt(sum(q * (1 - q) for q in probabilities))
        assert abs(observed[(a, b)] - expected) <= 4 * sd + 1e-9, (a, b)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_hybrid_share_of_mono_batches_is_alpha(groups, alpha):
    sampler = build_sampler("hybrid", groups, batch_size=8, seed=5, alpha=alpha)
    batches = draw(sampler, 5000)
    mono = 0
    for batch in batches:
        same = [p.query_lang == p.passage_lang for p in batch]
        assert all(same) or not any(same)  # a batch is wholly mono or wholly cross
        if all(same):
            assert len({p.query_lang for p in batch}) == 1
            mono += 1
    assert within_binomial(mono, len(batches), alpha), (mono, alpha)


def test_hybrid_at_the_ends_is_mono_or_cross(groups):
    for alpha, name in ((1.0, "mono"), (0.0, "cross")):
        hybrid = build_sampler("hybrid", groups, batch_size=8, seed=6, alpha=alpha)
        pure = build_sampler(name, groups, batch_size=8, seed=6)
        assert len(hybrid) == len(pure)
        assert draw(hybrid, 2 * len(pure) + 3) == draw(pure, 2 * len(pure) + 3)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sources_drawn_in_proportion_to_size_power_one_over_t(temperature):
    sizes = {"small": 40, "medium": 160, "large": 640}
    data = [g for i, (source, n) in enumerate(sizes.items())
            for g in make_groups(n, source=source, seed=i, min_languages=2)]
    sampler = build_sampler("hybrid", data, batch_size=4, seed=7, source_temperature=temperature)
    weights = {s: n ** (1 / temperature) for s, n in sizes.items()}
    total = sum(weights.values())
    table = sampler.source_probabilities()
    for row in table.itertuples():
        assert row.probability == pytest.approx(weights[row.source] / total)
    batches = draw(sampler, 3000)
    counts = Counter()
    for batch in batches:
        sources = {data[p.group].source for p in batch}
        assert len(sources) == 1
        counts[sources.pop()] += 1
    for source in sizes:
        assert within_binomial(counts[source], len(batches), weights[source] / total), (source, counts)


def test_languages_restricts_the_languages_used(groups):
    for name in ("xx", "mono", "cross", "hybrid"):
        sampler = build_sampler(name, groups, batch_size=6, languages=["de", "en", "es"])
        for batch in draw(sampler, 100):
            assert {l for p in batch for l in (p.query_lang, p.passage_lang)} <= {"de", "en", "es"}


# -- epochs, determinism, resumption -----------------------------------------------------------

def test_epoch_visits_every_group_of_a_pool_before_repeating_one():
    unique = make_groups(200, min_languages=2)
    sampler = build_sampler("xx", unique, batch_size=10)
    assert len(sampler) == 20
    seen = [p.group for batch in draw(sampler, 20) for p in batch]
    assert sorted(seen) == list(range(200))
    mono = build_sampler("mono", unique, batch_size=5, batches_per_epoch=400)
    assert len(mono) == 400
    per_language: dict[str, list[int]] = {}
    for batch in draw(mono, 400):
        per_language.setdefault(batch[0].query_lang, []).extend(p.group for p in batch)
    for lang, rows in per_language.items():
        pool = sum(lang in g.languages for g in unique)
        first_pass = rows[: min(pool, len(rows))]
        assert len(set(first_pass)) == len(first_pass), lang  # no repeat before the pool is used up


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_batches_other_seed_other_batches(groups, name):
    first = draw(build_sampler(name, groups, batch_size=8, seed=11), 60)
    again = draw(build_sampler(name, groups, batch_size=8, seed=11), 60)
    other = draw(build_sampler(name, groups, batch_size=8, seed=12), 60)
    assert first == again
    assert first != other
    sampler = build_sampler(name, groups, batch_size=8, seed=11)
    assert list(sampler.epoch_batches(0)) != list(sampler.epoch_batches(1))


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("where", ["start", "first epoch", "epoch boundary", "second epoch"])
def test_restored_sampler_continues_the_uninterrupted_sequence(groups, name, where):
    first = build_sampler(name, groups, batch_size=10, seed=21, alpha=0.3)
    epoch = len(first)
    stop = {"start": 0, "first epoch": 5, "epoch boundary": epoch, "second epoch": epoch + 7}[where]
    total = 2 * epoch + 10
    uninterrupted = draw(build_sampler(name, groups, batch_size=10, seed=21, alpha=0.3), total)
    head = draw(first, stop) if stop else []
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    assert {"seed", "epoch", "position"} <= set(state)
    restored = build_sampler(name, groups, batch_size=10, seed=21, alpha=0.3)
    restored.load_state_dict(state)
    assert head + draw(restored, total - stop) == uninterrupted


def test_set_epoch_starts_an_epoch_and_keeps_a_resumed_position(groups):
    sampler = build_sampler("hybrid", groups, batch_size=8, seed=0)
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler.epoch_batches(3))
    resumed = build_sampler("hybrid", groups, batch_size=8, seed=0)
    resumed.load_state_dict({**resumed.state_dict(), "epoch": 2, "position": 4})
    resumed.set_epoch(2)  # what a trainer does at the start of the resumed epoch
    assert list(resumed) == list(sampler.epoch_batches(2))[4:]
    assert sampler.state_dict(position=2)["position"] == 2


def test_state_from_another_configuration_is_refused(groups):
    state = build_sampler("mono", groups, batch_size=8, seed=1).state_dict()
    with pytest.raises(SamplingError, match="seed: state has 1, this sampler 2"):
        build_sampler("mono", groups, batch_size=8, seed=2).load_state_dict(state)
    with pytest.raises(SamplingError, match="sampler: state has 'mono'"):
        build_sampler("cross", groups, batch_size=8, seed=1).load_state_dict(state)
    with pytest.raises(SamplingError, match="groups"):
        build_sampler("mono", groups[:-1], batch_size=8, seed=1).load_state_dict(state)


# -- with a DataLoader ---------------------------------------------------------------------------

def test_dataloader_with_pair_dataset(groups):
    sampler = build_sampler("hybrid", groups, batch_size=8, seed=0)
    loader = DataLoader(PairDataset(groups), batch_sampler=sampler, collate_fn=list)
    assert len(loader) == len(sampler)
    expected = list(build_sampler("hybrid", groups, batch_size=8, seed=0).epoch_batches(0))
    batches = list(loader)
    assert len(batches) == len(expected)
    for batch, indices in zip(batches, expected):
        for item, index in zip(batch, indices):
            group = groups[index.group]
            assert item["qid"] == group.qid and item["source"] == "toy"
            assert item["query"] == group.queries[index.query_lang]
            assert item["positive"] == group.positives[index.passage_lang]
            assert (item["query_lang"], item["passage_lang"]) == (index.query_lang, index.passage_lang)
            assert item["negative_lang"] == index.passage_lang
            assert item["negative"] in group.negatives[index.passage_lang]
    sampler.set_epoch(1)
    assert len(list(loader)) == len(sampler)


def test_pair_dataset_negatives_language_determinism_and_errors(groups):
    row = next(i for i, g in enumerate(groups) if len(g.languages) >= 2)
    query_lang, passage_lang = groups[row].languages[:2]
    index = PairIndex(row, query_lang, passage_lang)
    by_passage = PairDataset(groups, negative_language="passage", seed=0)[index]
    by_query = PairDataset(groups, negative_language="query", seed=0)[index]
    assert by_passage["negative_lang"] == passage_lang and passage_lang in by_passage["negative"]
    assert by_query["negative_lang"] == query_lang and query_lang in by_query["negative"]
    assert PairDataset(groups, seed=0)[index] == PairDataset(groups, seed=0)[index]
    picks = {PairDataset(groups, seed=s)[index]["negative"] for s in range(30)}
    assert len(picks) > 1  # the seed changes the choice
    none = PairDataset(groups, hard_negatives=False)[index]
    assert none["negative"] is None and none["negative_lang"] is None
    bare = [ParallelGroup("q", "toy", {"en": "a"}, {"en": "b"})]
    assert PairDataset(bare)[PairIndex(0, "en", "en")]["negative"] is None
    with pytest.raises(SamplingError, match="negative_language 'document'"):
        PairDataset(groups, negative_language="document")
    with pytest.raises(TypeError, match="indexed by PairIndex"):
        PairDataset(groups)[3]
    missing = next(lang for lang in LANGUAGES if lang not in groups[row].languages)
    with pytest.raises(KeyError, match=f"no pair \\('{missing}'"):
        PairDataset(groups)[PairIndex(row, missing, passage_lang)]


# -- composition tables ----------------------------------------------------------------------------

def test_batch_composition_and_summaries(groups):
    sampler = build_sampler("hybrid", groups, batch_size=8, seed=0)
    n_batches = len(sampler) + 5  # runs into the second epoch
    table = batch_composition(sampler, groups, n_batches)
    assert sampler.state_dict()["position"] == 0  # the sampler itself is not advanced
    assert len(table) == 8 * n_batches
    assert set(table.columns) >= {"sampler", "epoch", "batch", "qid", "source", "query_lang",
                                  "passage_lang", "monolingual"}
    assert table.epoch.max() == 1 and table.batch.nunique() == n_batches
    assert table.groupby("batch").qid.nunique().eq(8).all()
    flat = [p for b in draw(build_sampler("hybrid", groups, batch_size=8, seed=0), n_batches) for p in b]
    assert list(table.query_lang) == [p.query_lang for p in flat]

    counts = language_pair_counts(table, LANGUAGES)
    assert list(counts.index) == list(counts.columns) == LANGUAGES
    assert counts.to_numpy().sum() == len(table)
    assert np.trace(counts.to_numpy()) == table.monolingual.sum()

    summary = batch_summary(table)
    assert len(summary) == n_batches and set(summary.kind) == {"mono", "cross"}
    assert (summary.loc[summary.kind == "mono", "languages"] == 1).all()
    assert (summary.loc[summary.kind == "cross", "monolingual_share"] == 0).all()
    xx = batch_summary(batch_composition(build_sampler("xx", groups, 8), groups, 20))
    assert set(xx.kind) == {"mixed"} and (xx.monolingual_share == 1).all() and (xx.languages > 1).all()
    with pytest.raises(SamplingError, match="same group list"):
        batch_composition(sampler, groups[:10], 3)

    both = pd.concat([summary, xx])
    overview = composition_overview(both)
    assert list(overview.index) == ["hybrid", "xx"]
    hybrid = overview.loc["hybrid"]
    assert hybrid.batches == n_batches
    assert hybrid.mono_batches + hybrid.cross_batches == pytest.approx(1.0)
    assert hybrid.mono_batches == pytest.approx((summary.kind == "mono").mean())
    assert hybrid.monolingual_pairs == pytest.approx(table.monolingual.mean())
    assert overview.loc["xx", "mixed_batches"] == 1.0 and overview.loc["xx", "monolingual_pairs"] == 1.0


def test_composition_figures_and_checks(groups):
    from lib.batch_composition import (batch_kinds_figure, composition_checks, language_pair_figure,
                                       mono_batch_languages, mono_language_figure, monolingual_share_figure)

    table = pd.concat([batch_composition(build_sampler(name, groups, 8, alpha=0.5), groups, 40)
                       for name in ("mono", "cross", "hybrid")], ignore_index=True)
    summary = batch_summary(table)
    languages = sorted(set(table.query_lang))
    for figure in (language_pair_figure(table, languages), monolingual_share_figure(summary),
                   batch_kinds_figure(summary, 0.5), mono_language_figure(summary, table, languages)):
        assert figure.axes
    mono = mono_batch_languages(summary, table)
    assert set(mono.sampler) <= {"mono", "hybrid"} and (mono.sampler == "mono").sum() == 40
    checks = composition_checks(summary, table, 0.5)
    assert checks["batches_with_repeated_qid"] == 0
    assert abs(checks["hybrid_mono_share"] - 0.5) <= checks["four_sigma_band"]
