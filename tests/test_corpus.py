"""Sharded, resumable corpus encoding and the faiss index types (lib.corpus, lib.indexes), on random vectors."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
import pytest

from lib.corpus import CorpusError, ShardedEmbeddings, encode_corpus
from lib.indexes import INDEX_TYPES, IndexParams, build_index, index_bytes, recall_against, rerank, search
from lib.io import read_json, write_json


def text_vector(text: str, dim: int = 16) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class CountingEncoder:
    """A deterministic stand-in for lib.encode.encode that counts how many texts it embedded."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.texts = 0
        self.fail_on_call = fail_on_call

    def __call__(self, chunk):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.texts += len(chunk)
        return np.stack([text_vector(t) for t in chunk])


TEXTS = [f"passage number {i}" for i in range(23)]
IDS = [f"doc{i}#0" for i in range(23)]


def expected() -> np.ndarray:
    return np.stack([text_vector(t) for t in TEXTS])


def test_encode_corpus_writes_shards_manifest_and_ids(tmp_path):
    encoder = CountingEncoder()
    store = encode_corpus(None, iter(TEXTS), tmp_path / "c", ids=iter(IDS), shard_size=5, encode_fn=encoder)
    assert store.complete and store.ntotal == 23 and store.dim == 16
    assert [s["stop"] - s["start"] for s in store.shards] == [5, 5, 5, 5, 3]
    assert sorted(p.name for p in (tmp_path / "c").glob("shard-*.npy")) == [f"shard-{i:05d}.npy" for i in range(5)]
    np.testing.assert_allclose(store.embeddings(), expected())
    assert store.ids() == IDS
    reopened = ShardedEmbeddings.open(tmp_path / "c")
    assert reopened.ntotal == 23 and reopened.ids() == IDS
    assert encoder.calls == 5


def test_rerun_skips_every_finished_shard(tmp_path):
    encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder())
    again = CountingEncoder()
    store = encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=again)
    assert again.calls == 0 and read_json(tmp_path / "manifest.json")["skipped_last_run"] == 5
    assert store.complete and store.ntotal == 23


def test_resume_after_a_deleted_last_shard_and_a_deleted_manifest_entry(tmp_path):
    encode_corpus(None, TEXTS, tmp_path, ids=IDS, shard_size=5, encode_fn=CountingEncoder())
    (tmp_path / "shard-00004.npy").unlink()                      # the last shard's file is gone
    manifest = read_json(tmp_path / "manifest.json")
    del manifest["shards"]["1"]                                  # a shard the manifest forgot
    write_json(tmp_path / "manifest.json", manifest)
    resumed = CountingEncoder()
    store = encode_corpus(None, TEXTS, tmp_path, ids=IDS, shard_size=5, encode_fn=resumed)
    assert resumed.calls == 2 and resumed.texts == 5 + 3
    np.testing.assert_allclose(store.embeddings(), expected())
    assert store.ids() == IDS


def test_resume_after_a_simulated_kill(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder(fail_on_call=3))
    partial = read_json(tmp_path / "manifest.json")
    assert sorted(partial["shards"]) == ["0", "1"] and not partial["complete"]
    assert not list(tmp_path.glob(".shard-*"))                   # nothing half-written is left behind
    resumed = CountingEncoder()
    store = encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=resumed)
    assert resumed.calls == 3 and resumed.texts == 13
    np.testing.assert_allclose(store.embeddings(), expected())


def test_a_changed_corpus_is_re_encoded_and_a_shorter_one_truncated(tmp_path):
    encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder())
    changed = TEXTS[:7] + ["a new passage"] + TEXTS[8:12]
    again = CountingEncoder()
    store = encode_corpus(None, changed, tmp_path, shard_size=5, encode_fn=again)
    assert again.calls == 2                                      # shard 1 changed, shard 2 shrank
    assert store.ntotal == 12 and len(store.shards) == 3
    np.testing.assert_allclose(store.embeddings(), np.stack([text_vector(t) for t in changed]))


def test_several_workers_share_the_shards_of_one_directory(tmp_path):
    first, second = CountingEncoder(), CountingEncoder()
    partial = encode_corpus(None, TEXTS, tmp_path, ids=IDS, shard_size=5, encode_fn=first, worker=0, workers=2)
    assert first.calls == 3 and not partial.complete             # shards 0, 2, 4; the other worker has not run
    store = encode_corpus(None, TEXTS, tmp_path, ids=IDS, shard_size=5, encode_fn=second, worker=1, workers=2)
    assert second.calls == 2 and store.complete and store.ntotal == 23
    assert sorted(p.name for p in tmp_path.glob("manifest*")) == ["manifest.worker-0-of-2.json",
                                                                   "manifest.worker-1-of-2.json"]
    np.testing.assert_allclose(ShardedEmbeddings.open(tmp_path).embeddings(), expected())
    assert store.ids() == IDS
    with pytest.raises(CorpusError, match="worker"):
        encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=second, worker=2, workers=2)


def test_resuming_with_other_settings_is_refused(tmp_path):
    encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder())
    with pytest.raises(CorpusError, match="another directory"):
        encode_corpus(None, TEXTS, tmp_path, shard_size=7, encode_fn=CountingEncoder())


def test_ids_must_match_texts(tmp_path):
    with pytest.raises(CorpusError, match="ids ran out"):
        encode_corpus(None, TEXTS, tmp_path / "a", ids=IDS[:-1], shard_size=5, encode_fn=CountingEncoder())
    with pytest.raises(CorpusError, match="more ids"):
        encode_corpus(None, TEXTS, tmp_path / "b", ids=IDS + ["extra"], shard_size=5, encode_fn=CountingEncoder())


def test_encode_corpus_with_a_real_backbone_matches_lib_encode(tiny_model, tmp_path):
    from lib.encode import encode

    texts = ["Der Hund schläft.", "The dog sleeps.", "Le chien dort.", "犬が寝ている。", "Mbwa analala."]
    store = encode_corpus(tiny_model, texts, tmp_path, shard_size=2, show_progress=False)
    np.testing.assert_allclose(store.embeddings(), encode(tiny_model, texts, "passage", cache=False), atol=1e-5)


# ---- indexes ---------------------------------------------------------------------------------

def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    data = centres[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, dim))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    data = clustered(3000)
    queries = clustered(50, seed=1)
    exact = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    return data, queries, exact


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_every_index_type_finds_the_nearest_neighbours(vectors, kind):
    data, queries, exact = vectors
    params = IndexParams(kind, nlist=16, nprobe=16, pq_m=8, pq_nbits=4, hnsw_m=16, ef_search=64, device="cpu")
    index, record = build_index(data, params, show_progress=False)
    scores, rows = search(index, queries, k=10)
    assert rows.shape == (50, 10) and scores.shape == (50, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)               # best first
    recall = recall_against(exact, rows)
    assert recall >= {"flat": 1.0, "ivf": 0.999, "hnsw": 0.9, "ivfpq": 0.3}[kind]
    assert record["device"] == "cpu" and record["n"] == 3000 and index_bytes(index) > 0


def test_ivf_with_few_probes_is_approximate_and_cheaper(vectors):
    data, queries, exact = vectors
    index, _ = build_index(data, IndexParams("ivf", nlist=64, nprobe=1, device="cpu"), show_progress=False)
    assert recall_against(exact, search(index, queries, k=10)[1]) < 1.0


def test_index_from_shards_equals_index_from_memory(tmp_path, vectors):
    data, queries, _ = vectors
    encode_corpus(None, range(len(data)), tmp_path, shard_size=700, encode_fn=lambda rows: data[rows[0]:rows[-1] + 1])
    store = ShardedEmbeddings.open(tmp_path)
    np.testing.assert_array_equal(store.embeddings(), data)
    from_shards, _ = build_index(store, "flat", show_progress=False)
    from_memory, _ = build_index(data, "flat", show_progress=False)
    np.testing.assert_array_equal(search(from_shards, queries, 5)[1], search(from_memory, queries, 5)[1])
    assert store.sample(100, seed=3).shape == (100, 32)
    np.testing.assert_array_equal(store.sample(100, seed=3), store.sample(100, seed=3))


def test_index_params_defaults_and_errors():
    resolved = IndexParams("ivf").resolved(1_000_000)
    assert resolved.nlist == 4000 and resolved.nprobe == 250 and resolved.train_size == 256_000
    assert IndexParams("ivf").resolved(100).nlist == 2              # never more cells than 39 rows each
    with pytest.raises(CorpusError, match="expected one of"):
        IndexParams("lsh")
    with pytest.raises(CorpusError, match="must divide"):
        build_index(clustered(500), IndexParams("ivfpq", nlist=4, pq_m=7, device="cpu"), show_progress=False)
    assert recall_against(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_is_an_error():
    with pytest.raises(CorpusError, match="no GPU"):
        build_index(clustered(100), IndexParams("flat", device="gpu"), show_progress=False)


def test_float16_shards_halve_the_bytes_and_read_back_as_float32(tmp_path):
    store = encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder(), dtype="float16")
    assert np.load(tmp_path / "shard-00000.npy").dtype == np.float16
    assert store.embeddings().dtype == np.float32
    np.testing.assert_allclose(store.embeddings(), expected(), atol=1e-3)
    with pytest.raises(CorpusError, match="another directory"):       # the stored dtype is a setting
        encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder())


def test_rows_reads_arbitrary_rows_across_shards(tmp_path):
    store = encode_corpus(None, TEXTS, tmp_path, shard_size=5, encode_fn=CountingEncoder())
    ids = np.array([[22, 0, 7], [5, 5, 14]])
    np.testing.assert_allclose(store.rows(ids), expected()[ids])
    with pytest.raises(CorpusError, match="outside"):
        store.rows(np.array([23]))


def test_rerank_recovers_what_product_quantisation_loses(tmp_path, vectors):
    data, queries, exact = vectors
    index, _ = build_index(data, IndexParams("ivfpq", nlist=16, nprobe=16, pq_m=4, pq_nbits=4, device="cpu"),
                           show_progress=False)
    approx = search(index, queries, k=10)[1]
    candidates = search(index, queries, k=500)[1]
    scores, reranked = rerank(data, queries, candidates, k=10)
    assert recall_against(exact, reranked) > recall_against(exact, approx)
    assert recall_against(exact, reranked) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    encode_corpus(None, range(len(data)), tmp_path, shard_size=700, encode_fn=lambda rows: data[rows[0]:rows[-1] + 1])
    from_disk = rerank(ShardedEmbeddings.open(tmp_path), queries, candidates, k=10)[1]
    np.testing.assert_array_equal(from_disk, reranked)
    padded = np.hstack([candidates[:, :5], -np.ones((len(candidates), 3), dtype=np.int64)])
    assert (rerank(data, queries, padded, k=8)[1][:, 5:] == -1).all()    # missing hits stay missing
