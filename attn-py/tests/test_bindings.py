"""The installed wheel: bindings against the Rust libraries' own results, errors, progress, Ctrl-C,
the GIL, and the `attnviz` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import attnviz

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "attn-extract" / "tests" / "fixtures"


def clusters(n_per=60, k=4, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0, size=(k, d))
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centers]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def synthetic_head(seqs=6, length=12, d=8, seed=1):
    """A head whose attention is the softmax of its own logits, per sequence."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(seqs * length, d)).astype(np.float32)
    k = rng.normal(size=(seqs * length, d)).astype(np.float32)
    attention = []
    for s in range(seqs):
        rows = slice(s * length, (s + 1) * length)
        logits = 2.0 * q[rows] @ k[rows].T
        a = np.exp(logits - logits.max(axis=1, keepdims=True))
        attention.append((a / a.sum(axis=1, keepdims=True)).astype(np.float32))
    return q, k, attention


# --- projections -------------------------------------------------------------------------------


def test_pca_equals_numpy_svd_up_to_sign():
    x, _ = clusters()
    # Under the cosine metric (the default) PCA lays out the L2-normalized rows.
    y = attnviz.project(x, "pca", 2, metric="euclidean")
    assert y.shape == (x.shape[0], 2) and y.dtype == np.float32
    centered = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
    expected = centered @ vt[:2].T
    for c in range(2):
        sign = np.sign(np.dot(y[:, c], expected[:, c]))
        assert np.max(np.abs(sign * y[:, c] - expected[:, c])) < 1e-3


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_layouts_are_seeded_and_separate_clusters(method):
    x, labels = clusters()
    a = attnviz.project(x, method, 2, seed=3, metric="euclidean")
    b = attnviz.project(x, method, 2, seed=3, metric="euclidean")
    assert np.array_equal(a, b)
    assert attnviz.trustworthiness(x, a, 10) > 0.9
    # Every point's nearest layout neighbour is of its own cluster.
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.98


def test_3d_and_info():
    x, _ = clusters(n_per=30)
    y, info = attnviz.project(x, "tsne", 3, perplexity=10, iterations=300, return_info=True)
    assert y.shape == (x.shape[0], 3)
    assert info["spec"]["dims"] == 3 and info["spec"]["params"]["perplexity"] == 10
    assert info["objective"] is not None and info["objective"] > 0


def test_input_layouts_are_converted_once():
    x, _ = clusters(n_per=20)
    expected = attnviz.project(x, "pca", 2)
    assert np.array_equal(attnviz.project(np.asfortranarray(x), "pca", 2), expected)
    assert np.array_equal(attnviz.project(x.astype(np.float64), "pca", 2), expected)
    assert np.array_equal(attnviz.project(x.tolist(), "pca", 2), expected)


def test_parameter_errors_name_the_parameter():
    x, _ = clusters(n_per=20)
    with pytest.raises(TypeError, match="unknown parameter `perplexiti`"):
        attnviz.project(x, "tsne", perplexiti=5)
    with pytest.raises(attnviz.AttnvizError, match="perplexity"):
        attnviz.project(x, "tsne", perplexity=-1)
    with pytest.raises(ValueError, match="method"):
        attnviz.project(x, "isomap")
    with pytest.raises(TypeError, match="`n_neighbors` must be a non-negative integer"):
        attnviz.project(x, "umap", n_neighbors="many")
    with pytest.raises(ValueError, match="expected a 2-D array"):
        attnviz.project(x[0], "pca")
    # The message is one line.
    try:
        attnviz.project(x, "tsne", perplexity=-1)
    except attnviz.AttnvizError as e:
        assert "\n" not in str(e)


def test_attention_aware_layout_shows_attention_better_than_plain():
    q, k, attention = synthetic_head()
    joint = np.concatenate([q, k])
    plain = attnviz.project(joint, "tsne", 2, seed=0, perplexity=10)
    aware = attnviz.project(joint, "tsne", 2, seed=0, perplexity=10, attention=attention)
    f_plain = attnviz.fidelity(plain, q, k, attention)
    f_aware = attnviz.fidelity(aware, q, k, attention)
    assert f_aware["queries"] == q.shape[0]
    assert f_aware["hit_at_3"] > f_plain["hit_at_3"] + 0.2, (f_plain, f_aware)
    ceiling, kl = attnviz.ceiling(attention)
    assert ceiling.shape == joint.shape[:1] + (2,) and kl is not None
    f_ceiling = attnviz.fidelity(ceiling, q, k, attention)
    assert f_ceiling["hit_at_3"] >= f_aware["hit_at_3"] - 0.05
    with pytest.raises(attnviz.AttnvizError, match="queries, then keys"):
        attnviz.project(q, "tsne", 2, attention=attention)


def test_quality_matches_its_definition_on_a_perfect_layout():
    x, _ = clusters(n_per=20, d=2)
    q = attnviz.quality(x, x, 5, metric="euclidean")
    assert q["trustworthiness"] == pytest.approx(1.0) and q["continuity"] == pytest.approx(1.0)
    assert q["k"] == 5


def test_the_gil_is_released_while_a_layout_is_made():
    x, _ = clusters(n_per=150)
    ticks = []
    done = threading.Event()

    def fit():
        attnviz.project(x, "tsne", 2, iterations=1500)
        done.set()

    worker = threading.Thread(target=fit)
    worker.start()
    while not done.is_set():
        ticks.append(time.monotonic())
        time.sleep(0.005)
    worker.join()
    # The main thread kept running Python while the fit ran.
    assert len(ticks) > 20


# --- datasets ----------------------------------------------------------------------------------


def fixture_texts(name):
    return json.loads((FIXTURES / name / "inputs.json").read_text())["sentences"]


@pytest.fixture(scope="module")
def gpt2_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "gpt2"
    events = []
    ds = attnviz.run(
        FIXTURES / "gpt2_tiny",
        fixture_texts("gpt2_tiny"),
        out=out,
        methods=["pca", "tsne"],
        perplexity=5,
        progress=lambda kind, stage, value: events.append((kind, stage, value)),
    )
    return ds, events


def test_run_stores_what_transformers_computes(gpt2_dataset):
    from safetensors.numpy import load_file

    ds, _ = gpt2_dataset
    expected = load_file(str(FIXTURES / "gpt2_tiny" / "expected.safetensors"))
    config = json.loads((FIXTURES / "gpt2_tiny" / "config.json").read_text())
    heads, d = config["n_head"], config["n_embd"] // config["n_head"]
    tokens = ds.tokens()
    lengths = [len(expected[f"s{i}.ids"]) for i in range(4)]
    assert tokens.num_rows == sum(lengths)
    assert tokens.column("seq_id").to_pylist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    worst = 0.0
    for layer in range(config["n_layer"]):
        for h in range(heads):
            head = ds.head(layer, h)
            q = np.concatenate([expected[f"s{i}.q.{layer}"][:, h * d : (h + 1) * d] for i in range(4)])
            k = np.concatenate([expected[f"s{i}.k.{layer}"][:, h * d : (h + 1) * d] for i in range(4)])
            worst = max(worst, np.abs(head["queries"] - q).max(), np.abs(head["keys"] - k).max())
            for i, a in enumerate(head["attention"]):
                worst = max(worst, np.abs(a - expected[f"s{i}.attn.{layer}"][h]).max())
    assert worst < 1e-5, worst


def test_run_reports_progress_and_writes_layouts(gpt2_dataset):
    ds, events = gpt2_dataset
    stages = [(kind, stage) for kind, stage, _ in events if kind != "advance"]
    assert ("start", "extract") in stages and ("finish", "project") in stages
    advances = [v for kind, stage, v in events if kind == "advance" and stage == "project"]
    assert advances == sorted(advances) and advances[-1] == 2 * len(ds.heads)
    coords, record = ds.projection(0, 0, "tsne", 2)
    assert coords.shape == (2 * ds.tokens().num_rows, 2)
    assert record["spec"]["params"]["perplexity"] == 5
    assert 0 < record["quality"]["trustworthiness"] <= 1
    info = ds.info()
    assert info["projections"]["tsne_2d"] == len(ds.heads) == 12
    summary = ds.summary(format="pandas")
    assert len(summary) == 12


def test_dataset_tables_come_back_as_arrow_and_pandas(gpt2_dataset):
    ds, _ = gpt2_dataset
    table = ds.table(1, 2, "vectors")
    assert "query" in table.column_names
    frame = ds.tokens(format="pandas")
    assert list(frame.columns[:3]) == ["token_index", "seq_id", "position"]
    assert ds.table(1, 2, "pca_2d").num_rows == 2 * len(frame)
    assert repr(ds).startswith("attnviz.Dataset(")


def test_reprojection_resumes_and_force_replaces(gpt2_dataset):
    ds, _ = gpt2_dataset
    again = ds.project(["pca"], progress=False)
    assert again["projections_computed"] == 0 and again["projections_reused"] == 12
    forced = ds.project(["pca"], heads=[(0, 0)], force=True, progress=False)
    assert forced["projections_computed"] == 1


def test_import_vectors_round_trip_with_grouped_keys(tmp_path):
    rng = np.random.default_rng(4)
    layers, heads, kv_heads, n, d = 2, 4, 2, 18, 8
    q = rng.normal(size=(layers, heads, n, d)).astype(np.float32)
    k = rng.normal(size=(layers, kv_heads, n, d)).astype(np.float32)
    tokens = [[f"t{i}" for i in range(10)], [f"u{i}" for i in range(8)]]
    ds = attnviz.import_vectors(q, k, tokens, out=tmp_path / "imp", causal=True, progress=False)
    assert ds.heads == [(l, h) for l in range(layers) for h in range(heads)]
    head = ds.head(1, 3)
    assert np.array_equal(head["queries"], q[1, 3])
    assert np.array_equal(head["keys"], k[1, 1])  # head 3 uses key head 3 // 2
    first = head["attention"][0]
    assert first.shape == (10, 10)
    assert np.allclose(first.sum(axis=1), 1, atol=1e-5) and np.allclose(np.triu(first, 1), 0)
    with pytest.raises(attnviz.AttnvizError, match="exists; pass overwrite=True"):
        attnviz.import_vectors(q, k, tokens, out=tmp_path / "imp", progress=False)
    ds = attnviz.import_vectors(q[:1], k[:1], tokens, out=tmp_path / "imp", overwrite=True, progress=False)
    assert len(ds.heads) == heads
    with pytest.raises(attnviz.AttnvizError, match="tokens"):
        attnviz.import_vectors(q, k, [["a", "b"]], out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_errors_are_one_line_naming_what_is_wrong(tmp_path):
    with pytest.raises(attnviz.AttnvizError, match=r"^model .*nowhere: no such directory$"):
        attnviz.run(tmp_path / "nowhere", ["a"], out=tmp_path / "o")
    with pytest.raises(attnviz.AttnvizError, match="not an attnviz dataset"):
        attnviz.open(tmp_path)
    with pytest.raises(TypeError, match="unknown parameter `perplexiti`"):
        attnviz.run(FIXTURES / "gpt2_tiny", ["a b"], out=tmp_path / "o", perplexiti=3)
    with pytest.raises(TypeError, match="one string"):
        attnviz.run(FIXTURES / "gpt2_tiny", "a b", out=tmp_path / "o")


CTRL_C = textwrap.dedent(
    """
    import os, signal, sys, threading, time, attnviz
    ds = attnviz.open(sys.argv[1])
    fired = []
    def progress(kind, stage, value):
        if kind == "advance" and value >= 1 and not fired:
            fired.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
    try:
        ds.project(["tsne"], tsne_iterations=4000, force=True, progress=progress)
    except KeyboardInterrupt:
        print("interrupted", round(time.monotonic() - fired[0], 2))
        sys.exit(0)
    print("finished")
    sys.exit(1)
    """
)


def test_ctrl_c_stops_a_long_call_and_keeps_finished_heads(gpt2_dataset, tmp_path):
    ds, _ = gpt2_dataset
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ds.path, copy)
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", CTRL_C, str(copy)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("interrupted"), r.stdout
    # Finished heads keep their new layouts; no half-written file is left.
    kept = attnviz.open(copy).info()["projections"]
    assert 1 <= kept.get("tsne_2d", 0) <= 12
    assert not list(copy.rglob(".*.tmp"))


def test_the_attnviz_command_is_the_rust_program(gpt2_dataset):
    ds, _ = gpt2_dataset
    exe = Path(sys.executable).with_name("attnviz")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("attnviz ")
    info = subprocess.run([exe, "info", "--json", ds.path], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model_heads"] == 12
    bad = subprocess.run([exe, "info", "/nonexistent"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "/nonexistent" in bad.stderr
    module = subprocess.run([sys.executable, "-m", "attnviz", "--version"], capture_output=True, text=True)
    assert module.stdout == version.stdout


def test_show_embeds_the_viewer(gpt2_dataset):
    ds, _ = gpt2_dataset
    view = ds.show(height=500)
    markup = view._repr_html_()
    assert markup.startswith('<iframe class="attnviz-viewer" srcdoc="')
    assert "height:500px" in markup and "&lt;script" in markup
    served = ds.show(server=True)
    try:
        import urllib.request

        with urllib.request.urlopen(served.server.url + "api/meta", timeout=10) as r:
            assert json.loads(r.read())["model"]["num_layers"] == 3
    finally:
        served.server.stop()
    assert not served.server.running()


# --- what a new user got wrong, said in Python's terms ------------------------------------------


def test_argument_errors_name_the_argument(gpt2_dataset):
    ds, _ = gpt2_dataset
    x, _ = clusters(n_per=20)
    with pytest.raises(TypeError, match="dims: expected an integer"):
        attnviz.project(x, "pca", dims="2")
    with pytest.raises(ValueError, match="seed: must be at least 0"):
        attnviz.project(x, "pca", seed=-1)
    with pytest.raises(TypeError, match="methods: expected a list of names"):
        ds.project("tsne")
    with pytest.raises(TypeError, match=r"heads: expected \(layer, head\) pairs"):
        ds.project(["pca"], heads=[0])
    with pytest.raises(TypeError, match="attention: expected one len x len matrix"):
        attnviz.fidelity(x, x, x, None)
    with pytest.raises(TypeError, match="pass attention= too"):
        attnviz.project(x, "tsne", causal=True)
    with pytest.raises(attnviz.AttnvizError, match="no head L7H7"):
        ds.attention(7, 7)
    with pytest.raises(TypeError, match="it takes none"):
        attnviz.project(x, "pca", perplexity=5)


def test_attention_is_checked_as_import_checks_it():
    q, k, attention = synthetic_head(seqs=2, length=6)
    joint = np.concatenate([q, k])
    with pytest.raises(ValueError, match=r"attention\[0\]: row 0 sums to 5.0000, not 1"):
        attnviz.project(joint, "tsne", attention=[a * 5 for a in attention])
    with pytest.raises(ValueError, match="causal, but position 0 attends to the later position 1"):
        attnviz.ceiling(attention, causal=True)
    with pytest.raises(ValueError, match="window: must be at least 1"):
        attnviz.fidelity(joint[:, :2], q, k, attention, causal=True, window=0)
    with pytest.raises(ValueError, match=r"attention matrices hold 12 tokens"):
        attnviz.fidelity(joint[:, :2], q[:10], k[:10], attention)


def test_pipeline_errors_speak_of_arguments_not_flags_or_staged_files(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, 2, 6, 4)).astype(np.float32)
    with pytest.raises(attnviz.AttnvizError) as e:
        attnviz.import_vectors(q, q[..., :3], [["a", "b", "c"], ["d", "e", "f"]], out=tmp_path / "x", progress=False)
    message = str(e.value)
    assert message.startswith("keys: shape [1, 2, 6, 3] does not fit the shape [1, 2, 6, 4] of queries"), message
    assert "--" not in message and ".import-" not in message
    with pytest.raises(attnviz.AttnvizError, match=r"^layers: 9"):
        attnviz.run(FIXTURES / "gpt2_tiny", ["a b"], out=tmp_path / "o", layers=[9], progress=False)


def test_a_capture_of_some_layers_keeps_the_models_size(tmp_path):
    transformers = pytest.importorskip("transformers", reason="capture needs torch + transformers")
    model = transformers.AutoModel.from_pretrained(FIXTURES / "gpt2_tiny")
    tokenizer = transformers.AutoTokenizer.from_pretrained(FIXTURES / "gpt2_tiny")
    ds = attnviz.capture(model, tokenizer, fixture_texts("gpt2_tiny"), out=tmp_path / "c", layers=[1], progress=False)
    assert ds.meta["model"]["num_layers"] == 3
    assert {layer for layer, _ in ds.heads} == {1}


CTRL_C_PROJECT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import numpy as np, attnviz
    x = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    sent = []
    def interrupt():
        time.sleep(1.5)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        attnviz.project(x, "tsne", iterations=10_000_000)
    except KeyboardInterrupt:
        print("interrupted", round(time.monotonic() - sent[0], 3))
        sys.exit(0)
    sys.exit(1)
    """
)


def test_ctrl_c_stops_a_single_layout_within_an_iteration():
    r = subprocess.run([sys.executable, "-c", CTRL_C_PROJECT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("interrupted"), r.stdout + r.stderr
    took = float(r.stdout.split()[1])
    # Ten million iterations would take hours; one takes milliseconds, the poll 50 ms.
    assert took < 5, took


def test_a_server_is_a_context_manager(gpt2_dataset):
    ds, _ = gpt2_dataset
    with ds.serve() as server:
        assert repr(server).startswith("<attnviz viewer serving at http://127.0.0.1:")
    assert not server.running() and "stopped" in repr(server)


def test_an_overwrite_that_fails_leaves_the_old_dataset(tmp_path):
    rng = np.random.default_rng(5)
    q = rng.normal(size=(1, 2, 6, 4)).astype(np.float32)
    tokens = [["a", "b", "c"], ["d", "e", "f"]]
    ds = attnviz.import_vectors(q, q, tokens, out=tmp_path / "ds", progress=False)
    before = ds.head(0, 1)["queries"]
    with pytest.raises(attnviz.AttnvizError, match="tokens"):
        attnviz.import_vectors(q, q, [["a", "b"]], out=tmp_path / "ds", overwrite=True, progress=False)
    assert np.array_equal(attnviz.open(tmp_path / "ds").head(0, 1)["queries"], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "no half-made sibling left"
    replaced = attnviz.import_vectors(2 * q, q, tokens, out=tmp_path / "ds", overwrite=True, progress=False)
    assert np.array_equal(replaced.head(0, 1)["queries"], 2 * before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
