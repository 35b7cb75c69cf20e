"""The paper's experiment as the paper ran it (issue 22): plan-time refusals on fixture sources, the
paper grid's faithful defaults and its variant, English-only sources in the samplers, streamed source
files, the translation job, lazy evaluation imports, and benchmarks/gpu_check.py --dry-run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lib.sources
from lib.data import ParallelGroup
from lib.downloads import PlanNeeds, disk_check, gated_check, unpinned_check
from lib.grid_plan import GridError, estimate_arithmetic, load_grid, plan_jobs
from lib.io import PROJECT_ROOT
from lib.sampling import build_sampler
from lib.sources import declared_sizes, get_source, stream_qa_groups

HUB_QA = {"kind": "hub-qa", "hub_id": "someone/qa", "files": ["train.jsonl"], "format": "jsonl",
          "columns": {"query": "q", "positive": "a"}}


@pytest.fixture
def fixture_sources(tmp_path, monkeypatch):
    """A source registry of fixture YAMLs: pinned, unpinned and gated hub-qa sources."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for name, extra in {"pinned": {"revision": "a" * 40}, "unpinned": {"revision": None},
                        "gated": {"revision": "b" * 40, "gated": True}}.items():
        (folder / f"{name}.yaml").write_text(json.dumps({**HUB_QA, **extra}))
    monkeypatch.setattr(lib.sources, "SOURCE_DIR", folder)
    monkeypatch.delenv("HBT_SOURCES_DIR", raising=False)
    return folder


def test_an_unpinned_source_is_refused_at_plan_time_unless_mirrored(fixture_sources, monkeypatch):
    refused = unpinned_check(PlanNeeds(["tiny"], ["pinned", "unpinned"], ["xquad-r"]))
    assert not refused.ok and "source unpinned: `revision: null`" in refused.lines[0] and len(refused.lines) == 1
    assert unpinned_check(PlanNeeds(["tiny"], ["pinned"], ["xquad-r"])).ok
    monkeypatch.setenv("HBT_SOURCES_DIR", str(fixture_sources))        # read from a local mirror: no download
    assert unpinned_check(PlanNeeds(["tiny"], ["unpinned"], ["xquad-r"])).ok


def test_an_unpinned_backbone_is_refused(monkeypatch):
    from lib.backbones import get_backbone

    labse = get_backbone("labse")
    monkeypatch.setattr("lib.downloads.get_backbone", lambda name: labse.__class__(
        **{**labse.__dict__, "revision": None}) if name == "labse" else get_backbone(name))
    check = unpinned_check(PlanNeeds(["labse"], [], ["xquad-r"]))
    assert not check.ok and "backbone labse" in check.lines[0]


def test_gated_datasets_need_a_token(fixture_sources):
    needs = PlanNeeds(["tiny"], ["gated"], ["xquad-r", "miracl"])
    refused = gated_check(needs, token="")
    assert not refused.ok and "miracl" in refused.lines[0] and "gated (someone/qa)" in refused.lines[0]
    assert gated_check(needs, token="hf_x").ok
    local = PlanNeeds(["tiny"], ["pinned"], ["miracl"], data_dirs={"miracl": "/data/miracl"})
    assert gated_check(local, token="").ok


def test_free_disk_is_checked_against_the_declared_sizes_with_the_arithmetic(monkeypatch):
    monkeypatch.delenv("HBT_SOURCES_DIR", raising=False)
    needs = PlanNeeds(["xlmr-base"], ["wikiqa"], ["miracl"], trained_runs={"xlmr-base": 3},
                      miracl_backbones=["xlmr-base"], workers=1)
    small = disk_check(needs, free_outputs_gb=50.0, free_cache_gb=50.0)
    text = "\n".join(small.lines)
    assert not small.ok and "1.1 GB x (2 x 3 training runs + 0 merges) = 6.6 GB" in text
    assert "57,523,666 passages x 768 dims x 4 bytes = 177 GB per model x 1" in text
    assert disk_check(needs, free_outputs_gb=1000.0, free_cache_gb=1000.0).ok
    kept = disk_check(PlanNeeds(["xlmr-base"], [], ["miracl"], miracl_backbones=["xlmr-base", "labse"],
                                keep_embeddings=True), free_outputs_gb=1000.0, free_cache_gb=1000.0)
    assert "x 2 (kept) = 353 GB" in "\n".join(kept.lines)


def test_the_paper_grid_is_refused_before_any_job_and_dry_run_prints_the_three_checks(tmp_path, monkeypatch, capsys):
    from lib.grid import main, run_grid

    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("HBT_SOURCES_DIR", raising=False)
    with pytest.raises(GridError, match="squadshifts: `revision: null`"):       # not pinned yet
        run_grid("grid-paper", execute=lambda *a, **k: pytest.fail("a job ran"))
    assert not (tmp_path / "grid-paper").exists()                              # nothing written
    main(["params/grid-paper.yaml", "--dry-run"])
    out = capsys.readouterr().out
    for check in ("pinned: every download names a commit", "gated datasets: token", "free disk against the declared sizes"):
        assert check in out
    assert "translate: wikiqa 58,760 + natural-questions 1,816,560" in out and "/ 40 texts/s" in out


def test_the_paper_grid_follows_the_paper_and_the_variant_names_each_deviation():
    paper, variant = load_grid("grid-paper"), load_grid("grid-paper-variant")
    assert paper.train["source_weighting"] == "declared" and paper.train["validation_source"] == "squadshifts"
    assert paper.train["batch_size"] == 100 and paper.train["learning_rate"] == pytest.approx(3e-5)
    assert [m["train"] for m in paper.train_datasets] == [lib.sources.PAPER_TRAIN_SOURCES]
    for name in ("mr-tydi-en", "mfaq-en"):                                      # English only, as the paper
        assert get_source(name).translate_to == [] and get_source(f"{name}-mt").translate_to
    from lib.backbones import get_backbone
    assert {get_backbone(b).query_prefix for b in paper.backbones} == {"Query: "}
    assert get_backbone("labse").query_prefix == "" and "labse" in variant.backbones
    sizes = declared_sizes(lib.sources.PAPER_TRAIN_SOURCES.split(","))
    assert sizes["mmarco"] / sum(sizes.values()) == pytest.approx(0.913, abs=0.001)      # ~90% of batches
    assert {k: sizes[k] for k in ("mfaq-en", "natural-questions", "newsqa", "duorc", "wikiqa")} == {
        "mfaq-en": 3.57e6, "natural-questions": 113535, "newsqa": 59496, "duorc": 33298, "wikiqa": 1469}
    assert variant.train["source_weighting"] == "loaded" and not variant.train.get("validation_source")
    for pinned, revision in (("wikiqa", "3f104672b5de699878fe7907afc486f0de325eb5"),
                             ("natural-questions", "f9e894e1081e206e577b4eaa9ee6de2b06ae6f17"),
                             ("duorc", "2de12436b8945030c283bf4af83925d60efe10c6")):
        assert get_source(pinned).revision == revision
    assert get_source("natural-questions").files == ["pair/train-00000-of-00001.parquet"]
    assert get_source("squadshifts").hub_id == "ludwigschmidt/squadshifts"
    assert get_source("yahoo-answers-qa").revision is None                      # registered, not pinned, not in the mix


def test_translation_is_one_job_before_every_training_that_needs_it():
    jobs = plan_jobs(load_grid("grid-paper"))
    translate = [job for job in jobs if job.kind == "translate"]
    assert len(translate) == 1 and jobs[0] is translate[0]
    assert translate[0].parameters["sources"] == ["wikiqa", "natural-questions", "duorc", "newsqa"]
    assert translate[0].parameters["batch_size"] == 64
    assert all(job.needs == (translate[0].run,) for job in jobs if job.kind == "train")
    assert any(line.startswith("train: 24 runs x (1000 steps x 0.5 s + 120 s + 60 s per job)")
               for line in estimate_arithmetic(load_grid("grid-paper")))


def _groups(source: str, n: int, languages) -> list[ParallelGroup]:
    return [ParallelGroup(qid=f"{source}:{i}", source=source, queries={l: f"{l} q{i}" for l in languages},
                          positives={l: f"{l} p{i}" for l in languages}) for i in range(n)]


def test_english_only_sources_feed_mono_batches_in_english_and_never_cross_batches():
    groups = _groups("parallel", 40, ["en", "de", "ar"]) + _groups("english", 40, ["en"])
    sizes = {"parallel": 1.0, "english": 3.0}
    mono = build_sampler("mono", groups, 8, seed=0, source_sizes=sizes)
    table = mono.source_probabilities().set_index("source")
    assert table.loc["english", "probability"] == pytest.approx(0.75)          # declared sizes, not 40 vs 40
    english_batches = [b for b in mono.epoch_batches(0) if groups[b[0].group].source == "english"]
    assert english_batches and all(p.query_lang == p.passage_lang == "en" for b in english_batches for p in b)
    for name in ("cross", "hybrid"):
        sampler = build_sampler(name, groups, 8, seed=0, source_sizes=sizes)
        for batch in sampler.epoch_batches(0):
            if any(p.query_lang != p.passage_lang for p in batch):               # a cross batch
                assert {groups[p.group].source for p in batch} == {"parallel"}
    assert set(build_sampler("cross", groups, 8, source_sizes=sizes).source_probabilities().source) == {"parallel"}


def test_large_jsonl_sources_are_streamed_and_reading_stops_at_max_queries(tmp_path):
    path = tmp_path / "pages.jsonl"
    pages = [{"id": p, "qa_pairs": [{"question": f"q{p}.{k}", "answer": f"a{p}.{k}"} for k in range(2)]}
             for p in range(6)]
    path.write_text("".join(json.dumps(page) + "\n" for page in pages) + "{not json, never read\n" * 50)
    source = get_source("mfaq-en").__class__(name="faq", kind="hub-qa", hub_id="x", files=["pages.jsonl"],
                                            format="jsonl", explode="qa_pairs", max_queries=7,
                                            columns={"query": "qa_pairs.question", "positive": "qa_pairs.answer"})
    groups = stream_qa_groups(source, [path], chunk_rows=2)
    assert [g.qid for g in groups] == [f"faq:{i}" for i in range(7)]            # global row numbers across chunks
    assert groups[6].queries == {"en": "q3.0"} and groups[6].positives == {"en": "a3.0"}


def test_lareqa_evaluation_imports_without_faiss_and_ir_measures():
    code = ("import builtins\nreal = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('faiss', 'ir_measures'):\n        raise ImportError('blocked ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\nimport lib.evaluate, lib.grid\nprint('imported')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


def test_gpu_check_dry_run_prints_what_it_would_measure_on_cpu():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for expected in ("xlmr-shaped", "hidden 768, 12 layers, vocab 250,002", "batch 100",
                     "mini_batch_size", "peak GPU memory", "passages/s", "me5-small-q4"):
        assert expected in done.stdout


def test_a_finished_run_keeps_its_weights_without_optimizer_state_and_a_rerun_finds_it_finished(tmp_path, monkeypatch):
    from lib.checkpoint import checkpoints
    from lib.train import train
    from tests.test_train import small_config, split, synthetic_groups

    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    config = small_config(steps=4, eval_every=2, checkpoint_every=2, run="stripped")
    first = train(config, groups=split(synthetic_groups()), progress=False)
    kept = checkpoints(first.run_dir)
    assert [p.name for p in kept] == ["step-000004"] and not (kept[0] / "optimizer.safetensors").exists()
    assert not (kept[0] / "model.safetensors").exists() and (kept[0] / "resume.json").is_file()
    assert (first.model_dir / "model.safetensors").is_file() and (first.best_model_dir / "model.safetensors").is_file()
    again = train(config, groups=split(synthetic_groups()), progress=False)      # nothing left to train
    assert again.metrics["resumed_from_step"] == 4 and again.metrics["steps"] == 4
    assert again.metrics["best_val_loss"] == pytest.approx(first.metrics["best_val_loss"])
    full = train(small_config(steps=4, eval_every=2, checkpoint_every=2, run="full", keep_optimizer_state=True),
                 groups=split(synthetic_groups()), progress=False)
    assert [p.name for p in checkpoints(full.run_dir)] == ["step-000002", "step-000004"]
    assert (checkpoints(full.run_dir)[-1] / "optimizer.safetensors").is_file()
