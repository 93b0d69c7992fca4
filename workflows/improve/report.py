"""``<out>/report.md`` of an ``armflow improve`` run: the learning curve (forward success on the episodic
evaluation seeds against wall time), the detector's FP / FN against privileged success over time, the counts,
and the stream itself (the recorded camera video of the continuous run, with a filmstrip)."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, summary: dict) -> Path:
    from armflow.workflows.media import plot_curves, save_filmstrip

    ev, au = summary["eval_history"], summary["audit_history"]
    plot_curves(out / "learning_curve.png",
                {"forward success (eval seeds)": ([e["wall_s"] / 60 for e in ev] + [summary["wall_time_s"] / 60],
                                                  [e["success_rate"] for e in ev] + [summary["success_rate"]["final"]])},
                "wall time [min]", "success rate", "reset-free improvement")
    series = {}
    for key in ("fp_rate", "fn_rate"):
        pts = [(a["wall_s"] / 60, a["recent"][key]) for a in au if a["recent"][key] is not None]
        if pts:
            series[f"detector {key.split('_')[0].upper()} (last 200 checks)"] = tuple(zip(*pts))
    if series:
        plot_curves(out / "detector.png", series, "wall time [min]", "rate", "detector vs privileged success")
    sr = summary["success_rate"]
    lines = ["# armflow improve", "",
             f"Forward success on separate episodic seeds: **{sr['start']:.2f} -> {sr['final']:.2f}** "
             f"({sr['start_episodes']} / {sr['final_episodes']} episodes) in {summary['wall_time_s'] / 60:.1f} min "
             f"of wall time, {summary['robot_steps']} robot steps.", "",
             "| | |", "|---|---|",
             f"| scene resets after the first | {summary['scene_resets']} |",
             f"| needs-human events | {summary['needs_human']} |",
             f"| human takeovers (steps) | {summary['interventions']} ({summary['intervention_steps']}) |",
             f"| detector FP / FN rate (whole run) | {_rate(summary['detector']['fp_rate'])} / "
             f"{_rate(summary['detector']['fn_rate'])} |",
             f"| attempts per skill | {json.dumps(summary['attempts'])} |",
             f"| detected / privileged successes | {json.dumps(summary['detected_successes'])} / "
             f"{json.dumps(summary['privileged_successes'])} |",
             "", "![learning curve](learning_curve.png)", ""]
    if series:
        lines += ["![detector](detector.png)", ""]
    videos = sorted((out / "dataset" / "videos").rglob("*.mp4"))
    if videos:
        rel = videos[-1].relative_to(out)
        strip = save_filmstrip(out / "stream_filmstrip.png", videos[-1], n_frames=8)
        lines += ["## The stream", "", f"The stream as the robot's camera saw it (its newest video file; scene resets: see the table): "
                  f"[{rel}]({rel})",
                  "", f"![stream]({strip.name})", ""]
    if summary.get("videos"):
        lines += ["## The improved forward skill", ""] + [
            f"- [{Path(v).name}]({Path(v).resolve().relative_to(out.resolve())}) (evaluation seed, third person)"
            for v in summary["videos"]] + [""]
    if summary.get("needs_human_reasons"):
        lines += ["## Needs-human events", ""] + [f"- {r}" for r in summary["needs_human_reasons"]] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _rate(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
