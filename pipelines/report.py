"""The evaluation report: metrics against targets, loss curves, CER by length, voices, and
the probes answered wrong.

Written as markdown (what Dagster shows) and HTML with PNG plots (what MLflow keeps), from the
evaluation's item table and the training runs MLflow recorded.
"""

import html
from pathlib import Path
from typing import Protocol

import mlflow
import pyarrow.parquet as pq
from matplotlib.figure import Figure  # no pyplot: files only, no display backend needed
from mlflow import MlflowClient

from omni_model.evaluation.evaluate import ItemResult, cer_by_length, similarity_by_voice
from pipelines.assets.common import format_cell, markdown_table

LOSSES = ("text_loss", "audio_loss")


class EvaluatedModel(Protocol):
    mlflow_run_id: str
    items_path: str
    metrics: dict[str, float]
    transcriber: str


def html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def loss_curves(run_id: str, path: Path) -> list[dict]:
    """Every stage of the checkpoint's plan launch, text and audio loss by step; one row per
    stage with its final losses."""
    parent = mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId", run_id)
    stages = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        order_by=["start_time ASC"],
        output_format="list",
    )
    client = MlflowClient()
    figure = Figure(figsize=(10, 3.2))
    axes = figure.subplots(1, len(LOSSES))
    rows = []
    for run in stages:
        stage = run.data.tags.get("stage", run.info.run_name)
        for axis, metric in zip(axes, LOSSES, strict=True):
            history = client.get_metric_history(run.info.run_id, metric)
            axis.plot([p.step for p in history], [p.value for p in history], label=stage)
        rows.append({"stage": stage} | {k: run.data.metrics.get(f"final_{k}") for k in LOSSES})
    for axis, metric in zip(axes, LOSSES, strict=True):
        axis.set_title(metric.replace("_", " "))
        axis.set_xlabel("step")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return rows


def bar_chart(labels: list[str], series: dict[str, list[float]], title: str, path: Path) -> None:
    figure = Figure(figsize=(6, 3))
    axis = figure.subplots()
    width = 0.8 / max(1, len(series))
    for number, (name, values) in enumerate(series.items()):
        positions = [i + number * width for i in range(len(labels))]
        axis.bar(positions, values, width, label=name)
    axis.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels)
    axis.set_title(title)
    if len(series) > 1:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_report(result: EvaluatedModel, folder: Path) -> str:
    """Write report.md, report.html and the plots into `folder`; returns the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [ItemResult(**row) for row in pq.read_table(result.items_path).to_pylist()]
    lengths = cer_by_length(items)
    length_rows = [
        {"bucket": name, "cer": counts.rate, "characters": counts.length}
        for name, counts in lengths.items()
    ]
    bar_chart(list(lengths), {"CER": [c.rate for c in lengths.values()]},
              "speech CER by reply length", folder / "cer_by_length.png")  # fmt: skip
    voices = similarity_by_voice(items)
    voice_rows = [
        {"voice": voice, "same voice": same, "other voices": other}
        for voice, (same, other) in voices.items()
    ]
    bar_chart(
        list(voices),
        {"same voice": [s for s, _ in voices.values()],
         "other voices": [o or 0.0 for _, o in voices.values()]},
        "speaker similarity of the replies",
        folder / "similarity_by_voice.png",
    )  # fmt: skip
    stage_rows = loss_curves(result.mlflow_run_id, folder / "loss_curves.png")
    metric_rows = [{"metric": key, "value": value} for key, value in result.metrics.items()]
    wrong_rows = [  # what the scores hide: which questions fail, and how
        {"task": item.task, "question": item.question, "reply": item.reply,
         "expected": item.answer}
        for item in items
        if not item.held_out and not item.exact_match and item.seed == items[0].seed
    ]  # fmt: skip
    sections = [
        ("Metrics", metric_rows, None),
        ("Training stages (final losses)", stage_rows, "loss_curves.png"),
        ("Speech CER by reply length", length_rows, "cer_by_length.png"),
        ("Speaker similarity by voice", voice_rows, "similarity_by_voice.png"),
        ("Probes answered wrong", wrong_rows, None),
    ]
    intro = (
        f"Checkpoint run `{result.mlflow_run_id}`, {len({i.item_id for i in items})} items, "
        f"each asked under {len({i.seed for i in items})} sampling seed(s) (the replies to the "
        f"first are listed below; every metric pools all of them); speech read by "
        f"{result.transcriber} (its floor, the CER on espeak-ng renderings of the same "
        "texts, is `speech/asr_floor_cer`; the codec's, the CER on those renderings encoded "
        "and decoded by the model's codec, `speech/codec_floor_cer`; the share of replies it "
        "heard word for word, `speech/heard_whole`, or not at all, `speech/heard_nothing`)."
    )
    markdown = "\n\n".join(
        [f"# Evaluation\n\n{intro}"]
        + [
            f"## {title}\n\n{markdown_table(rows)}" + (f"\n\n![{title}]({image})" if image else "")
            for title, rows, image in sections
        ]
    )
    (folder / "report.md").write_text(markdown)
    body = "".join(
        f"<h2>{html.escape(title)}</h2>{html_table(rows)}"
        + (f'<img src="{image}" alt="{html.escape(title)}">' if image else "")
        for title, rows, image in sections
    )
    (folder / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{border:1px solid #ccc;padding:2px 8px}table{border-collapse:collapse}</style>"
        f"<h1>Evaluation</h1><p>{html.escape(intro)}</p>{body}"
    )
    return markdown
