"""BLiMP (Warstadt et al. 2020, "BLiMP: The Benchmark of Linguistic Minimal Pairs for English"):
67 paradigms of 1,000 minimal pairs; a model is right on a pair when it gives the good sentence
a strictly higher log-probability than the bad one (`scoring`: a causal LM's sum of token
log-probs, a masked LM's pseudo-log-likelihood). A tie is counted and reported, never right:
12 paradigms are the same words reordered, where any bag-of-words score ties.

The overall score is the mean of the paradigms' accuracies (the paper's); a field's or a
phenomenon's is the mean of its paradigms'. Phenomena are the paper's 12 (as
models_summary.jsonl groups the paradigms: the data files call the two animate_subject
paradigms `s-selection`, which the paper counts under argument_structure). The paper's
5-gram, LSTM, Transformer-XL and GPT-2 rows are means of their paradigm accuracies over the
same paradigms.

The pairs ship with lmjax (`DATA`, provenance in lmjax/data/assets/blimp/README.md); `data`
may also name a folder laid out as the BLiMP repository (data/*.jsonl, models_summary.jsonl)
or a .jsonl / .jsonl.gz file of pairs.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np

from lmjax import errors
from lmjax import workdir as workdir_lib
from lmjax.data import corpora
from lmjax.evals import scoring
from lmjax.train import inference

DATA = os.path.join(corpora.ASSETS, "blimp", "blimp.jsonl.gz")
PAPER_SUMMARY = os.path.join(corpora.ASSETS, "blimp", "models_summary.jsonl")
FIELDS = ("UID", "pairID", "field", "linguistics_term", "sentence_good", "sentence_bad")
# The paper's models (models_summary.jsonl columns) and how the table names them.
REFERENCES = {"ngram": "5-gram", "lstm": "LSTM", "txl": "TXL", "gpt2": "GPT-2"}
HUMAN_OVERALL = 0.886  # the paper's human agreement, mean of 67 paradigms (none per paradigm)
TASKS = ("clm", "mlm_nsp")  # the workdirs whose models have an LM head
SUMMARY_FILE = "blimp.json"
PLOT_FILE = "blimp.png"
CURVE_FILE = "blimp_curve.json"  # `curve`: one row per checkpoint
CURVE_PLOT = "blimp_curve.png"


@dataclasses.dataclass(frozen=True)
class Pair:
    uid: str  # the paradigm
    pair_id: str
    field: str  # syntax, morphology, semantics, syntax_semantics
    phenomenon: str  # the paper's 12 (linguistics_term)
    good: str
    bad: str


#### Data


def data_files(data: str | None = None) -> tuple[list[str], str]:
    """(files of pairs, the paper's models_summary.jsonl) of `data`: None (the shipped pairs),
    a BLiMP folder (data/*.jsonl or *.jsonl, and its models_summary.jsonl if it has one) or a
    .jsonl / .jsonl.gz file."""
    if data is None:
        return [DATA], PAPER_SUMMARY
    if os.path.isfile(data):
        return [data], PAPER_SUMMARY
    if not os.path.isdir(data):
        raise errors.MissingInput(
            f"--data={data!r} does not exist: give a BLiMP folder (data/*.jsonl) or a .jsonl file"
        )
    files = sorted(glob.glob(os.path.join(data, "data", "*.jsonl")))
    files = files or sorted(
        f for f in glob.glob(os.path.join(data, "*.jsonl")) if not f.endswith("summary.jsonl")
    )
    if not files:
        raise errors.MissingInput(
            f"--data={data!r} holds no paradigm files: expected data/*.jsonl (the BLiMP "
            "repository's layout) or *.jsonl"
        )
    summary = os.path.join(data, "models_summary.jsonl")
    return files, summary if os.path.isfile(summary) else PAPER_SUMMARY


def _read_jsonl(path: str) -> Iterable[tuple[int, dict]]:
    """(line number, record) of each line of a JSON-lines file, gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, json.loads(line)
    except (ValueError, OSError, EOFError) as e:  # bad JSON, bad UTF-8, a broken .gz
        raise errors.InputError(f"{path}:{number}: not JSON lines ({e})") from None


def read_pairs(data: str | None = None, limit: int | None = None) -> list[Pair]:
    """The pairs of `data` (`data_files`) in file order, the first `limit` of each paradigm
    when given; `errors.InputError` naming the file and line of a bad record."""
    if limit is not None and limit < 1:
        raise errors.InputError(f"--limit={limit} must be >= 1 (pairs per paradigm)")
    files, summary = data_files(data)
    phenomena = {row["UID"]: row["linguistics_term"] for row in read_paper_summary(summary)}
    pairs, counts = [], {}
    for path in files:
        for number, record in _read_jsonl(path):
            missing = [k for k in FIELDS if not isinstance(record, dict) or k not in record]
            if missing:
                raise errors.InputError(f"{path}:{number} has no {missing[0]!r}: not a BLiMP pair")
            uid = str(record["UID"])
            counts[uid] = counts.get(uid, 0) + 1
            if limit is not None and counts[uid] > limit:
                continue
            pairs.append(
                Pair(
                    uid=uid,
                    pair_id=str(record["pairID"]),
                    # One paradigm (principle_A_case_2) spells it syntax/semantics.
                    field=str(record["field"]).replace("/", "_"),
                    phenomenon=phenomena.get(uid, str(record["linguistics_term"])),
                    good=str(record["sentence_good"]),
                    bad=str(record["sentence_bad"]),
                )
            )
    if not pairs:
        raise errors.InputError(f"--data={data!r} holds no pairs")
    return pairs


def read_paper_summary(path: str = PAPER_SUMMARY) -> list[dict]:
    """The per-paradigm rows of the paper's models_summary.jsonl (its group means left out)."""
    rows = [r for _, r in _read_jsonl(path) if isinstance(r, dict) and r.get("UID") != "overall"]
    for row in rows:
        missing = [k for k in ("UID", "linguistics_term", *REFERENCES) if k not in row]
        if missing:
            raise errors.InputError(f"{path}: a row has no {missing[0]!r}: {row}")
    return rows


#### Decisions and their aggregates


def decide(logp_good: np.ndarray, logp_bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tie) per pair: correct only when log p(good) > log p(bad) strictly."""
    logp_good, logp_bad = np.asarray(logp_good), np.asarray(logp_bad)
    return logp_good > logp_bad, logp_good == logp_bad


def _group_means(paradigm_values: Mapping[str, float], group_of: Mapping[str, str]) -> dict:
    groups = {}
    for uid, value in paradigm_values.items():
        groups.setdefault(group_of[uid], []).append(value)
    return {name: float(np.mean(values)) for name, values in sorted(groups.items())}


def aggregate(pairs: Sequence[Pair], correct: np.ndarray, tie: np.ndarray) -> dict:
    """{overall, ties, fields, phenomena, paradigms}: accuracies are means of the paradigms'
    (a field's or phenomenon's over its paradigms), paradigms in file order with their pairs,
    ties and accuracy."""
    paradigms = {}
    for pair, ok, tied in zip(pairs, correct, tie, strict=True):
        p = paradigms.setdefault(
            pair.uid, {"field": pair.field, "phenomenon": pair.phenomenon, "pairs": 0}
        )
        p["pairs"] += 1
        p["correct"] = p.get("correct", 0) + int(ok)
        p["ties"] = p.get("ties", 0) + int(tied)
    for p in paradigms.values():
        p["accuracy"] = p.pop("correct") / p["pairs"]
    accuracy = {uid: p["accuracy"] for uid, p in paradigms.items()}
    return {
        "overall": float(np.mean(list(accuracy.values()))),
        "ties": int(np.sum(tie)),
        "fields": _group_means(accuracy, {u: p["field"] for u, p in paradigms.items()}),
        "phenomena": _group_means(accuracy, {u: p["phenomenon"] for u, p in paradigms.items()}),
        "paradigms": paradigms,
    }


def paper_rows(pairs: Sequence[Pair], summary: str = PAPER_SUMMARY) -> dict:
    """{model: {overall, fields, phenomena, paradigms}} of the paper's models over the paradigms
    of `pairs` (those the summary has)."""
    group = {p.uid: (p.field, p.phenomenon) for p in pairs}
    rows = [r for r in read_paper_summary(summary) if r["UID"] in group]
    out = {}
    for model in REFERENCES:
        accuracy = {r["UID"]: float(r[model]) for r in rows}
        if not accuracy:
            continue
        out[model] = {
            "overall": float(np.mean(list(accuracy.values()))),
            "fields": _group_means(accuracy, {u: group[u][0] for u in accuracy}),
            "phenomena": _group_means(accuracy, {u: group[u][1] for u in accuracy}),
        }
    return out


#### The evaluation


def check_output(output: str | None) -> None:
    """`errors.MissingInput` when `output`'s folder does not exist (checked before scoring)."""
    if output is not None:
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise errors.MissingInput(
                f"--output={output!r}: its folder {folder!r} does not exist: make it first"
            )


def evaluate(
    workdir: str,
    step: int | None = None,
    data: str | None = None,
    limit: int | None = None,
    metric: str | None = None,
    batch_size: int = 64,
    output: str | None = None,
) -> dict:
    """Scores every pair of `data` with `workdir`'s model (checkpoint `step`, default the
    latest) and returns the summary (`aggregate` per score, the paper's rows, the run's facts).
    `metric`: the masked LM score that decides (pll, default, or pll_word_l2r); `output`: a
    JSON-lines file, one line per pair. The input is checked before the model loads."""
    config = inference.check_workdir(workdir, step)
    if config.task not in TASKS:
        raise errors.InputError(
            f"workdir {workdir!r} trained task {config.task!r}: BLiMP scores a language model "
            f"(task {' or '.join(TASKS)})"
        )
    masked = (scoring.PLL, scoring.PLL_WORD_L2R)
    if config.task == "clm" and metric not in (None, scoring.CAUSAL):
        raise errors.InputError(f"--metric={metric} is for masked LMs; a causal LM has logp")
    if config.task == "mlm_nsp" and metric not in (None, *masked):
        raise errors.InputError(f"--metric={metric} must be one of {', '.join(masked)}")
    metric = metric or (scoring.CAUSAL if config.task == "clm" else scoring.PLL)
    if batch_size < 1:
        raise errors.InputError(f"--batch_size={batch_size} must be >= 1")
    check_output(output)
    pairs = read_pairs(data, limit)
    _, summary_file = data_files(data)

    model, params, tokenizer = inference.load_model(workdir, step)
    # Plain arrays on the default device: with the checkpoint's one-device mesh sharding the
    # scoring programs would not match (nor reuse from the compilation cache) the same model's
    # programs compiled by any other caller of `scoring`.
    params = jax.device_put(jax.device_get(params))
    tick = time.perf_counter()
    n = len(pairs)
    scores = scoring.score_sentences(
        model, params, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs], batch_size
    )
    seconds = time.perf_counter() - tick
    results = {}
    for name, logp in scores.items():
        correct, tie = decide(logp[:n], logp[n:])
        results[name] = aggregate(pairs, correct, tie)
    if output is not None:
        write_pair_scores(output, pairs, scores, metric)
    main = results[metric]
    return {
        "workdir": os.path.abspath(workdir),
        "step": workdir_lib.latest_step(workdir) if step is None else step,
        "task": config.task,
        "metric": metric,
        "data": data or DATA,
        "limit": limit,
        "num_paradigms": len(main["paradigms"]),
        "num_pairs": n,
        "seconds": round(seconds, 1),
        "overall": main["overall"],
        "ties": main["ties"],
        "results": results,
        "paper": paper_rows(pairs, summary_file),
    }


def write_pair_scores(
    path: str, pairs: Sequence[Pair], scores: Mapping[str, np.ndarray], metric: str
) -> None:
    """One JSON line per pair: UID, pairID, logp_good and logp_bad (the score of `metric`), and
    `<score>_good`, `<score>_bad` of every other score."""
    n = len(pairs)
    with open(path, "w", encoding="utf-8") as f:
        for i, pair in enumerate(pairs):
            line = {"UID": pair.uid, "pairID": pair.pair_id}
            line["logp_good"], line["logp_bad"] = (
                float(scores[metric][i]),
                float(scores[metric][n + i]),
            )
            for name, logp in scores.items():
                if name != metric:
                    line[f"{name}_good"], line[f"{name}_bad"] = float(logp[i]), float(logp[n + i])
            f.write(json.dumps(line) + "\n")


#### Report: table, JSON, plot


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _model_name(summary: Mapping) -> str:
    """What was scored: the summary's `model` (a baseline without a workdir), else the workdir
    and step."""
    return summary.get("model") or f"{summary['workdir']} step {summary['step']}"


def format_table(summary: Mapping) -> str:
    """The summary as text: overall, per phenomenon and per field, this model's score(s) beside
    the paper's models over the same paradigms, and the ties."""
    metric, results, paper = summary["metric"], summary["results"], summary["paper"]
    names = [metric, *(m for m in results if m != metric)]
    columns = [*names, *paper]
    labels = [*names, *(REFERENCES[m] for m in paper)]
    groups = (*results[metric]["phenomena"], *results[metric]["fields"])
    width = max(len(k) for k in groups) + 4  # two for the indent, two for the gap

    def line(label, values):
        return f"{label:<{width}}" + "".join(f"{v:>{max(len(h), 6) + 2}}" for v, h in values)

    def row(label, pick):
        values = []
        for c, h in zip(columns, labels, strict=True):
            source = results[c] if c in results else paper[c]
            values.append((_percent(pick(source)), h))
        return line(label, values)

    out = [
        f"BLiMP: {summary['num_paradigms']} paradigms, {summary['num_pairs']:,} pairs, "
        f"{_model_name(summary)} ({summary['seconds']} s)",
        line("", [(h, h) for h in labels]),
        row("overall", lambda s: s["overall"]),
        "phenomenon:",
    ]
    for name in results[metric]["phenomena"]:
        out.append(row(f"  {name}", lambda s, name=name: s["phenomena"].get(name)))
    out.append("field:")
    for name in results[metric]["fields"]:
        out.append(row(f"  {name}", lambda s, name=name: s["fields"].get(name)))
    n = summary["num_pairs"]
    ties = ", ".join(
        f"{name} {r['ties']:,} ({100 * r['ties'] / n:.1f}%)" for name, r in results.items()
    )
    out.append(f"ties (counted wrong) of {n:,} pairs: {ties}")
    if summary["num_paradigms"] == 67 and summary["limit"] is None:
        out.append(f"human (paper, overall only): {_percent(HUMAN_OVERALL)}")
    return "\n".join(out)


def save_summary(summary: Mapping, folder: str) -> tuple[str, str]:
    """Writes FOLDER/blimp.json and FOLDER/blimp.png; returns their paths."""
    path = os.path.join(folder, SUMMARY_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return path, plot_summary(summary, os.path.join(folder, PLOT_FILE))


def curve(
    workdir: str,
    data: str | None = None,
    limit: int | None = None,
    metric: str | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """`evaluate` at every checkpoint of `workdir`, oldest first: per step the tokens trained on
    by then (step x batch_size x seq_len), the overall accuracy and the ties."""
    config = inference.check_workdir(workdir)
    rows = []
    for step in workdir_lib.checkpoint_steps(workdir):
        summary = evaluate(workdir, step, data, limit, metric, batch_size)
        rows.append(
            {
                "step": step,
                "tokens": step * config.batch_size * config.seq_len,
                "overall": summary["overall"],
                "ties": summary["ties"],
                "metric": summary["metric"],
                "num_pairs": summary["num_pairs"],
            }
        )
    return rows


def save_curve(rows: Sequence[Mapping], folder: str) -> tuple[str, str]:
    """Writes FOLDER/blimp_curve.json and FOLDER/blimp_curve.png (overall accuracy against
    tokens trained on); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(folder, CURVE_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(rows), f, indent=2)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["tokens"] / 1e6 for r in rows], [100 * r["overall"] for r in rows], marker="o")
    ax.axhline(50, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("tokens trained on (millions)")
    ax.set_ylabel(f"BLiMP overall, % ({rows[0]['num_pairs']:,} pairs)" if rows else "BLiMP, %")
    ax.legend()
    fig.tight_layout()
    plot = os.path.join(folder, CURVE_PLOT)
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    return path, plot


def plot_summary(summary: Mapping, path: str) -> str:
    """Bars per phenomenon (and overall): this model's accuracy beside the paper's models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, results, paper = summary["metric"], summary["results"], summary["paper"]
    groups = ["overall", *results[metric]["phenomena"]]
    series = [(f"this model ({metric})", results[metric])]
    series += [(REFERENCES[m], paper[m]) for m in paper]

    def value(source, group):
        v = source["overall"] if group == "overall" else source["phenomena"].get(group)
        return np.nan if v is None else 100 * v

    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(groups) + 2), 4.5))
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (label, source) in enumerate(series):
        heights = [value(source, g) for g in groups]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls=":", label="chance")
    if summary["num_paradigms"] == 67 and summary["limit"] is None:  # the paper's 67 only
        ax.plot([-0.45, 0.45], [100 * HUMAN_OVERALL] * 2, "k--", lw=1, label="human (overall)")
    ax.set_xticks(x)
    ax.set_xticklabels([g.replace("_", " ") for g in groups], rotation=35, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 115)  # room for the legend above the bars
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=7, loc="upper center")
    name = summary.get("model") or (
        f"{os.path.basename(os.path.normpath(summary['workdir']))} step {summary['step']}"
    )
    ax.set_title(f"BLiMP, {summary['num_paradigms']} paradigms: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#### Several seeds of several arms: mean ± std


def seed_runs(folder: str) -> dict[str, list[dict]]:
    """{arm: [summary, ...]} of FOLDER's `ARM_SEED.json` files (blimp.json copies), by seed."""
    arms: dict[str, list[tuple[int, dict]]] = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = re.fullmatch(r"(.+)_(\d+)\.json", name)
        if match:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                arms.setdefault(match[1], []).append((int(match[2]), json.load(f)))
    if not arms:
        raise errors.MissingInput(f"no ARM_SEED.json summaries in {folder}")
    return {arm: [s for _, s in sorted(runs)] for arm, runs in arms.items()}


def over_seeds(runs: Sequence[Mapping]) -> dict:
    """Overall accuracy's mean and sample std (ddof 1) over the seeds' summaries (each scored
    with its own `metric`), and each phenomenon's mean."""
    results = [run["results"][run["metric"]] for run in runs]
    overall = np.array([r["overall"] for r in results])
    phenomena = {
        name: float(np.mean([r["phenomena"][name] for r in results]))
        for name in results[0]["phenomena"]
    }
    return {
        "seeds": len(runs),
        "mean": float(overall.mean()),
        "std": float(overall.std(ddof=1)) if len(runs) > 1 else float("nan"),
        "overall": overall.tolist(),
        "phenomena": phenomena,
    }


def format_seed_table(arms: Mapping[str, Mapping]) -> str:
    """Markdown: one column per arm (`over_seeds`), overall mean ± std, then each phenomenon's
    mean over the seeds, in percent."""
    names = list(arms)
    out = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| seeds | " + " | ".join(str(arms[a]["seeds"]) for a in names) + " |",
        "| **overall**, mean ± std | "
        + " | ".join(f"**{100 * arms[a]['mean']:.1f} ± {100 * arms[a]['std']:.1f}**" for a in names)
        + " |",
    ]
    for phenomenon in arms[names[0]]["phenomena"]:
        values = " | ".join(f"{100 * arms[a]['phenomena'][phenomenon]:.1f}" for a in names)
        out.append(f"| {phenomenon} | {values} |")
    return "\n".join(out)
