"""experiments/glue.py (every task of several checkpoints, the learning rate selected per task,
the table) and experiments/predict.py (GLUE submission files), end to end on tiny runs, and the
selection rule on hand-made metrics."""

import csv
import os

import numpy as np
import pytest

from configs import bert_tiny_wikitext
from lmjax import workdir as workdir_lib
from lmjax.data import corpora, glue
from lmjax.sweep import glue as glue_sweep
from lmjax.tasks import glue_metrics
from lmjax.train import loop, predict
from tests.conftest import override, run_script

# Tiny runs: 4 steps of batch 8 at sequence 32 (the `,test` presets), a 1-layer width-32 model
# from scratch, one eval at the end over the whole dev file (GLUE's metrics need all of it).
TINY = (
    "num_train_steps=4", "eval_every_steps=4", "checkpoint_every_steps=4", "eval_steps=-1",
    "model.num_layers=1", "model.emb_dim=32", "model.mlp_dim=64", "model.num_heads=2",
)  # fmt: skip
TASKS = ("mrpc", "stsb")  # a classification and the regression task, both with two metrics


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _attempts(root):
    """run dir -> (attempts in point.json, bytes of train.log) for every run under root."""
    out = {}
    for run_dir in workdir_lib.find_runs(root):
        record = workdir_lib.read_point(run_dir)
        out[run_dir] = (len(record["attempts"]), os.path.getsize(workdir_lib.log_file(run_dir)))
    return out


@pytest.fixture(scope="module")
def glue_run(tmp_path_factory):
    """A tiny pretraining run, then experiments/glue.py on it and from scratch: 2 tasks x 2
    learning rates x 1 seed x 2 checkpoints, the learning rate chosen on a 10% holdout."""
    root = tmp_path_factory.mktemp("glue")
    pretrain = str(root / "bert_tiny")
    config = bert_tiny_wikitext.get_config("test")
    override(config, **{"model.num_layers": 1, "model.emb_dim": 32, "model.mlp_dim": 64,
                        "model.num_heads": 2, "num_train_steps": 2})  # fmt: skip
    loop.train_and_evaluate(config, pretrain)
    out = str(root / "glue")
    args = [
        f"--init_from=scratch,{pretrain}",
        f"--workdir={out}",
        f"--tasks={','.join(TASKS)}",
        "--seeds=0",
        "--learning_rates=1e-4,1e-3",
        "--config=configs/glue.py:test",
        "--select_on=holdout",
        "--holdout_size=0.1",
        "--parallel=2",
        *[f"--override={o}" for o in TINY],
    ]
    proc = run_script("glue.py", *args)
    return out, args, proc


def test_glue_runs_every_task_and_writes_the_table(glue_run):
    out, args, proc = glue_run
    assert "8 points, 0 finished, 8 to run" in proc.stdout
    rows = _read_csv(os.path.join(out, "glue.csv"))
    assert [r["checkpoint"] for r in rows] == ["scratch", "bert_tiny"]
    for row in rows:
        assert row["select_on"] == "holdout" and row["glue_seeds"] == "1"
        scores = []
        for task in TASKS:
            metrics = {m: float(row[f"{task}/{m}"]) for m in glue_metrics.METRICS[task]}
            assert float(row[f"{task}/learning_rate"]) in (1e-4, 1e-3)
            scores.append(float(row[f"{task}/score"]))
            assert scores[-1] == pytest.approx(glue_metrics.task_score(task, metrics))
        # The GLUE score: the mean of the task scores, MRPC and STS-B each the mean of two.
        assert float(row["glue_score"]) == pytest.approx(np.mean(scores))
    runs = _read_csv(os.path.join(out, "glue_all.csv"))
    assert len(runs) == 8 and {r["status"] for r in runs} == {"done"}
    assert {r["run_dir"] for r in runs} == set(workdir_lib.find_runs(out))
    # Every run held out 10% of its task's training set and was scored there too.
    for r in runs:
        assert r["holdout_score"] and r["score"]
        config = workdir_lib.load_config(r["run_dir"])
        assert config.data.holdout_size == round(0.1 * len(glue.read_tsv(
            config.data.train_path, r["task"])))  # fmt: skip
    # The table's cell is the run whose holdout score is the best of its task's grid.
    for row in rows:
        for task in TASKS:
            mine = [r for r in runs if r["checkpoint"] == row["checkpoint"] and r["task"] == task]
            best = max(mine, key=lambda r: float(r["holdout_score"]))
            assert float(row[f"{task}/learning_rate"]) == float(best["learning_rate"])
            assert float(row[f"{task}/score"]) == pytest.approx(float(best["score"]))
    md = open(os.path.join(out, "glue.md")).read()
    assert "selected on holdout" in md and "| bert_tiny |" in md and "MRPC (F1/acc)" in md
    assert os.path.getsize(os.path.join(out, "glue.png")) > 1000
    assert os.path.isdir(os.path.join(out, "bert_tiny", "stsb", "lr=0.001,seed=0", "checkpoints"))

    # The same command again reruns nothing and writes the same table.
    before = _attempts(out)
    table = open(os.path.join(out, "glue.csv")).read()
    again = run_script("glue.py", *args)
    assert "8 points, 8 finished, 0 to run" in again.stdout
    assert _attempts(out) == before
    assert open(os.path.join(out, "glue.csv")).read() == table


def _read_predictions(path):
    lines = open(path).read().splitlines()
    assert lines[0] == "index\tprediction"
    indices, values = zip(*(line.split("\t") for line in lines[1:]), strict=True)
    assert list(indices) == [str(i) for i in range(len(indices))]
    return list(values)


def _final_eval(run_dir):
    (last,) = [r for r in workdir_lib.read_metrics(run_dir) if r["step"] == 4 and "eval/loss" in r]
    return last


def test_predictions_reproduce_the_runs_metrics(glue_run, tmp_path):
    out = glue_run[0]
    run_dir = os.path.join(out, "bert_tiny", "mrpc", "lr=0.001,seed=0")
    dev = glue.read_tsv(glue.embedded_name("mrpc", "dev"), "mrpc")
    output = str(tmp_path / "MRPC.tsv")
    run_script("predict.py", f"--workdir={run_dir}", "--input=glue_mrpc_dev", f"--output={output}",
               "--batch_size=64")  # fmt: skip
    values = _read_predictions(output)
    assert len(values) == len(dev) == 408 and set(values) <= set(glue.FORMATS["mrpc"].labels)
    ids = np.array([glue.FORMATS["mrpc"].labels.index(v) for v in values])
    recomputed = glue_metrics.compute("mrpc", dev.labels, ids)
    final = _final_eval(run_dir)
    for metric, value in recomputed.items():
        assert value == pytest.approx(final[f"eval/{metric}"], abs=1e-6), metric

    # GLUE's unlabelled test layout (index, then the sentences) predicts the same.
    rows = corpora.resolve(glue.embedded_name("mrpc", "dev"))
    lines = open(rows, encoding="utf-8-sig").read().splitlines()
    test_file = tmp_path / "test.tsv"
    test_file.write_text(
        "\n".join(["\t".join(glue.FORMATS["mrpc"].test_header)]
                  + [f"{i}\t" + line.split("\t", 1)[1] for i, line in enumerate(lines[1:])])
        + "\n"
    )  # fmt: skip
    assert glue.read_tsv(str(test_file), "mrpc").labels is None
    np.testing.assert_array_equal(predict.predict(run_dir, str(test_file), batch_size=48), ids)

    # STS-B: the raw scores give the run's correlations; the file has them to 3 decimals. The
    # tiny model's scores barely vary (std ~2e-5), so its correlations move with float rounding:
    # batches of the run's own size (8) reproduce the eval's to 1e-6; batches of 64 to ~1e-5.
    run_dir = os.path.join(out, "scratch", "stsb", "lr=0.001,seed=0")
    dev = glue.read_tsv(glue.embedded_name("stsb", "dev"), "stsb")
    scores = predict.predict(run_dir, glue.embedded_name("stsb", "dev"), batch_size=8)
    assert scores.dtype.kind == "f" and len(scores) == len(dev) == 1500
    final = _final_eval(run_dir)
    for metric, value in glue_metrics.compute("stsb", dev.labels, scores).items():
        assert value == pytest.approx(final[f"eval/{metric}"], abs=1e-6), metric
    output = str(tmp_path / "STS-B.tsv")
    predict.write_predictions(run_dir, glue.embedded_name("stsb", "dev"), output)
    written = np.array([float(v) for v in _read_predictions(output)])
    np.testing.assert_allclose(written, scores, atol=5e-4 + 1e-7)


def test_predict_rejects_another_tasks_file(glue_run, tmp_path):
    run_dir = os.path.join(glue_run[0], "scratch", "mrpc", "lr=0.0001,seed=0")
    output = tmp_path / "out.tsv"
    proc = run_script("predict.py", f"--workdir={run_dir}", "--input=glue_rte_dev",
                      f"--output={output}", check=False)  # fmt: skip
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("lmjax: error: ") and "not a GLUE mrpc file" in message
    assert not output.exists()


#### Selection on hand-made metrics (no training)


def _run(checkpoint, task, lr, seed, dev, holdout=None, status="done"):
    names = glue_metrics.METRICS[task]
    metrics = {f"eval/{m}": v for m, v in zip(names, dev, strict=False)}
    if holdout is not None:
        metrics.update({f"eval/holdout_{m}": v for m, v in zip(names, holdout, strict=True)})
    return {"checkpoint": checkpoint, "task": task, "learning_rate": lr, "seed": seed,
            "status": status, "run_dir": f"/runs/{checkpoint}/{task}/{lr}/{seed}",
            "metrics": metrics if status == "done" else {}}  # fmt: skip


RUNS = [
    # RTE: 1e-3 is best on dev (0.66 against 0.61), 1e-4 on the holdout (0.71 against 0.61).
    _run("ckpt", "rte", 1e-4, 0, [0.60], [0.70]),
    _run("ckpt", "rte", 1e-4, 1, [0.62], [0.72]),
    _run("ckpt", "rte", 1e-3, 0, [0.65], [0.60]),
    _run("ckpt", "rte", 1e-3, 1, [0.67], [0.62]),
    # MRPC: the best F1 alone (1e-4) is not the best mean of F1 and accuracy (1e-3).
    _run("ckpt", "mrpc", 1e-4, 0, [0.81, 0.60], [0.81, 0.60]),
    _run("ckpt", "mrpc", 1e-4, 1, [0.81, 0.62], [0.81, 0.62]),
    _run("ckpt", "mrpc", 1e-3, 0, [0.80, 0.70], [0.80, 0.70]),
    _run("ckpt", "mrpc", 1e-3, 1, [0.78, 0.70], [0.78, 0.70]),
    _run("ckpt", "mrpc", 3e-3, 0, [0.99, 0.99], [0.99, 0.99]),
    _run("ckpt", "mrpc", 3e-3, 1, [], status="failed"),  # a failed run rules 3e-3 out ...
    # ... and neither does one not run to its end.
    _run("ckpt", "mrpc", 1e-2, 0, [], status="interrupted"),
]


def test_selection_takes_the_best_mean_on_dev_and_reports_its_dev_metrics():
    (row,) = glue_sweep.select(RUNS, ["rte", "mrpc"], "dev")
    rte, mrpc = row.cells["rte"], row.cells["mrpc"]
    assert rte.learning_rate == 1e-3 and rte.seeds == [0, 1]
    assert rte.metrics["accuracy"] == pytest.approx((0.66, np.std([0.65, 0.67], ddof=1)))
    # 3e-3 has the best dev numbers but a seed that failed: a rate competes only once all its
    # seeds have finished. Of the others the best mean of F1 and accuracy wins, not F1 alone.
    assert mrpc.learning_rate == 1e-3 and mrpc.seeds == [0, 1]
    assert mrpc.selection == pytest.approx({1e-4: 0.71, 1e-3: 0.745})
    assert mrpc.unfinished == {3e-3: 1, 1e-2: 1}
    # The GLUE score: per seed the mean of the task scores, then mean ± std over seeds.
    per_seed = [np.mean([0.65, 0.75]), np.mean([0.67, 0.74])]
    assert row.glue_seeds == [0, 1]
    assert row.glue == pytest.approx((np.mean(per_seed), np.std(per_seed, ddof=1)))


def test_selection_on_holdout_reports_dev_numbers_mean_and_std():
    (row,) = glue_sweep.select(RUNS, ["rte", "mrpc"], "holdout")
    rte, mrpc = row.cells["rte"], row.cells["mrpc"]
    assert rte.learning_rate == 1e-4  # best on the holdout, not on dev
    assert rte.metrics["accuracy"] == pytest.approx((0.61, np.std([0.60, 0.62], ddof=1)))
    assert rte.selection == pytest.approx({1e-4: 0.71, 1e-3: 0.61})
    assert mrpc.learning_rate == 1e-3
    assert mrpc.metrics["f1"] == pytest.approx((0.79, np.std([0.80, 0.78], ddof=1)))
    assert mrpc.metrics["accuracy"] == pytest.approx((0.70, 0.0))
    assert mrpc.score == pytest.approx((0.745, np.std([0.75, 0.74], ddof=1)))
    per_seed = [np.mean([0.60, 0.75]), np.mean([0.62, 0.74])]
    assert row.glue == pytest.approx((np.mean(per_seed), np.std(per_seed, ddof=1)))
    # The tables: dev numbers of the chosen rate, mean ± std, and every rate's selection score.
    md = glue_sweep.markdown([row], RUNS, ["rte", "mrpc"], "holdout", {"rte": 249, "mrpc": 367})
    assert "| ckpt | 0.677 ± 0.004 | 0.610 ± 0.014 | 0.790 ± 0.014 / 0.700 ± 0.000 |" in md
    assert "| ckpt | rte | **0.710** | 0.610 |  |  | 0.0001 | 0, 1 |" in md
    assert "| mrpc | 0.710 | **0.745** | (1 unfinished) | (1 unfinished) | 0.001 |" in md
    assert "/runs/ckpt/mrpc/0.01/0: interrupted" in md
    (line,) = glue_sweep.table_rows([row], ["rte", "mrpc"], "holdout")
    assert line["rte/learning_rate"] == 1e-4 and line["mrpc/seeds"] == 2
    assert line["rte/accuracy_std"] == pytest.approx(np.std([0.60, 0.62], ddof=1))
    assert line["rte/accuracy"] == pytest.approx(0.61) and line["glue_score"] == row.glue[0]
    # Holdout selection needs holdout metrics.
    with pytest.raises(ValueError, match="holdout metrics"):
        glue_sweep.select([_run("c", "rte", 1e-4, 0, [0.5])], ["rte"], "holdout")
    # A tie goes to the first learning rate of the grid.
    tie = [_run("c", "rte", lr, 0, [0.5]) for lr in (3e-4, 1e-4)]
    assert glue_sweep.select(tie, ["rte"])[0].cells["rte"].learning_rate == 3e-4
    # A task without a finished run leaves its cell and the GLUE score empty.
    (row,) = glue_sweep.select(tie + [_run("c", "wnli", 1e-4, 0, [], status="failed")],
                               ["rte", "wnli"])  # fmt: skip
    assert "wnli" not in row.cells and row.glue is None


def test_points_flags_and_checks(tmp_path):
    pretrain = tmp_path / "runs" / "seed=0"
    workdir_lib.write_json(pretrain / "config.json", {"task": "mlm_nsp"})
    other = tmp_path / "other" / "seed=0"
    workdir_lib.write_json(other / "config.json", {"task": "mlm_nsp"})
    names = glue_sweep.checkpoint_names(["", str(pretrain), str(other) + "/"])
    assert names == {"scratch": "", "runs_seed=0": str(pretrain), "other_seed=0": str(other)}
    with pytest.raises(ValueError, match="twice"):
        glue_sweep.checkpoint_names(["scratch", ""])
    assert glue_sweep.parse_overrides(["num_train_steps=4", "model.dtype=bfloat16"]) == {
        "num_train_steps": 4, "model.dtype": "bfloat16"}  # fmt: skip

    workdir = str(tmp_path / "glue")
    points = glue_sweep.make_points(workdir, ["scratch", str(pretrain)], ["rte", "cola"],
                                    [1e-4, 3e-4], [0, 1], epochs=2, holdout_size=0.1)  # fmt: skip
    assert len(points) == 2 * 2 * 2 * 2
    p = points[-1]
    assert (p.checkpoint, p.task, p.learning_rate, p.seed) == ("seed=0", "cola", 3e-4, 1)
    assert p.point.run_dir == os.path.join(workdir, "seed=0", "cola", "lr=0.0003,seed=1")
    steps = 2 * 8551 // 32  # configs/glue.py's rule: epochs * training examples // batch size
    assert p.point.num_train_steps == steps
    assert p.point.overrides == {
        "num_epochs": 2.0, "num_train_steps": steps, "warmup_steps": steps // 10,
        "eval_every_steps": steps, "data.holdout_size": 855, "init_from": str(pretrain),
        "learning_rate": 3e-4, "seed": 1}  # fmt: skip
    assert points[0].point.args[0].endswith("configs/glue.py:rte")

    bad = [
        ({"overrides": {"num_train_step": 4}}, "did you mean 'num_train_steps'"),
        ({"overrides": {"learning_rate": 1e-3}}, "--learning_rates sets it"),
        ({"overrides": {"num_train_steps": 4}, "epochs": 1}, "--epochs sets it"),
        ({"overrides": {"batch_size": "many"}}, "batch_size"),
        ({"init_from": [str(tmp_path / "nowhere")]}, "not a run directory"),
        ({"tasks": ["qqp"]}, "unknown task"),
    ]
    for kwargs, match in bad:
        kwargs = {"init_from": ["scratch"], "tasks": ["rte"], **kwargs}
        with pytest.raises(ValueError, match=match):
            glue_sweep.make_points(workdir, learning_rates=[1e-4], seeds=[0], **kwargs)
    with pytest.raises(ValueError, match="needs --holdout_size"):
        glue_sweep.run(workdir, ["scratch"], train_command=[], select_on="holdout")


def test_print_commands_runs_nothing(tmp_path):
    proc = run_script("glue.py", "--init_from=scratch", f"--workdir={tmp_path / 'g'}",
                      "--tasks=wnli", "--seeds=0,1", "--print_commands")  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 * 2 and all("train.py --config=" in line for line in lines)
    assert "--config.learning_rate=0.0003 --config.seed=1" in lines[3]
    assert not (tmp_path / "g").exists()
    bad = run_script("glue.py", "--init_from=scratch", f"--workdir={tmp_path / 'g'}",
                     "--override=nope=1", check=False)  # fmt: skip
    assert bad.returncode == 2 and "lmjax: error: " in bad.stderr and "nope" in bad.stderr
