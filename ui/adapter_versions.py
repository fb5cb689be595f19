"""The flywheel per adapter version: what it trained on, the gate's verdict, its eval figures.

Everything comes from each version's manifest in ``GET /admin/adapters``: ``data`` (the
snapshot's counts and turn ids), ``training_rows`` (what survived the length fit),
``gate`` (passed, win rate, reasons) and ``eval`` (``python -m app.eval`` on questions
training never saw, with the base model measured in the same run). A version without
one of them shows a dash: older versions, rejected ones and hand-made ones often lack
``eval``.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

# Eval figures by the names ``app.eval`` gives them, with the words the page uses;
# any other numeric figure is shown under its own name.
FIGURES = {
    "answerable_recall": "answerable token recall",
    "answerable_f1": "answerable token F1",
    "unanswerable_declined": "unanswerable declined",
    "answerable_wrongly_declined": "answerable wrongly declined",
    "answers_citing_valid_source": "answers citing a valid source",
    "answers_ending_in_repetition": "answers ending in repetition",
    "latency_p50_s": "median latency (s)",
}
ADAPTER = "adapter version"
BASE = "base model (same run)"


def figure_label(key: str) -> str:
    """How the page names an eval figure."""
    return FIGURES.get(key, key.replace("_", " "))


def numbers(values: dict[str, Any] | None) -> dict[str, float]:
    """The numeric entries of ``values`` (booleans and text left out)."""
    return {
        k: float(v)
        for k, v in (values or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def stamp(value: Any) -> str | None:
    """A stored ISO time as ``YYYY-MM-DD HH:MM`` (None stays None)."""
    return str(value)[:16].replace("T", " ") if value else None


def oldest_first(adapters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions in the order they were made (the API lists them newest first)."""
    return sorted(adapters, key=lambda a: (str(a["created_at"]), a["name"], a["version"]))


def gate_word(manifest: dict[str, Any]) -> str | None:
    """``passed`` or ``failed``; None when the version was never gated."""
    gate = manifest.get("gate")
    if not isinstance(gate, dict) or "passed" not in gate:
        return None
    return "passed" if gate["passed"] else "failed"


def version_rows(adapters: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per adapter version: status, gate, data trained on, eval figures."""
    rows = []
    for a in adapters:
        manifest = a.get("manifest") or {}
        gate = manifest.get("gate") or {}
        data = manifest.get("data") or {}
        counts = data.get("counts") or {}
        fit = manifest.get("training_rows") or {}
        row: dict[str, Any] = {
            "version": a["served_name"],
            "status": a["status"],
            "algo": manifest.get("algo"),
            "gate": gate_word(manifest),
            "win rate": gate.get("win_rate"),
            "gate reasons": "; ".join(gate.get("reasons") or []) or None,
            "signals": counts.get("with_signal"),
            "train": counts.get("train"),
            "held out": counts.get("heldout"),
            "rows kept": f"{fit['kept']}/{fit['given']}" if "kept" in fit else None,
        }
        evaluated = (manifest.get("eval") or {}).get("figures")
        row |= {figure_label(k): v for k, v in numbers(evaluated).items()}
        row |= {"created": stamp(a["created_at"]), "promoted": stamp(a.get("promoted_at"))}
        rows.append(row)
    return pd.DataFrame(rows)


def eval_frame(adapters: list[dict[str, Any]]) -> pd.DataFrame:
    """Each eval figure of each version, and of the base model in the same run, in long form."""
    rows = []
    for a in oldest_first(adapters):
        measured = (a.get("manifest") or {}).get("eval") or {}
        for series, figures in ((ADAPTER, measured.get("figures")), (BASE, measured.get("base"))):
            rows += [
                {
                    "version": a["served_name"],
                    "figure": figure_label(k),
                    "series": series,
                    "value": v,
                }
                for k, v in numbers(figures).items()
            ]
    return pd.DataFrame(rows, columns=["version", "figure", "series", "value"])


def eval_chart(frame: pd.DataFrame) -> alt.FacetChart:
    """One small chart per figure: its value over versions, the base model dashed beneath."""
    versions = list(dict.fromkeys(frame["version"]))
    figures = list(dict.fromkeys(frame["figure"]))
    line = alt.Chart().encode(
        x=alt.X("version:N", sort=versions, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title=None, axis=alt.Axis(format="~r")),
        color=alt.Color(
            "series:N", sort=[ADAPTER, BASE], title=None, legend=alt.Legend(orient="top")
        ),
        tooltip=["version", "figure", "series", alt.Tooltip("value:Q", format=".3f")],
    )
    # The base first, so a version equal to it still shows on top.
    base = line.transform_filter(alt.datum.series == BASE).mark_line(point=True, strokeDash=[4, 3])
    adapter = line.transform_filter(alt.datum.series == ADAPTER).mark_line(point=True)
    return (
        alt.layer(base, adapter, data=frame)
        .properties(width=200, height=150)
        .facet(facet=alt.Facet("figure:N", sort=figures, title=None), columns=3)
        .resolve_scale(y="independent")
    )


def count_table(values: dict[str, Any], what: str) -> pd.DataFrame:
    """A two-column table of a dict of counts."""
    return pd.DataFrame({what: list(values), "count": list(values.values())})


def version_details(adapter: dict[str, Any]) -> None:
    """Inside a version's expander: gate, eval against base, data counts, its turns."""
    manifest = adapter.get("manifest") or {}
    gate = manifest.get("gate") or {}
    verdict = gate_word(manifest)
    if verdict is None:
        st.caption("Not gated.")
    else:
        win = f" (win rate {gate['win_rate']:.2f})" if gate.get("win_rate") is not None else ""
        reasons = "".join(f"\n- {r}" for r in gate.get("reasons") or [])
        (st.success if verdict == "passed" else st.error)(
            f"Gate {verdict}{win}." + (f"\n{reasons}" if reasons else "")
        )

    measured = manifest.get("eval") or {}
    if measured:
        mine, base = numbers(measured.get("figures")), numbers(measured.get("base"))
        st.markdown(
            f"**Eval** on `{measured.get('dataset', '?')}` (pool {measured.get('pool', '?')}), "
            f"{stamp(measured.get('at')) or 'time not recorded'}"
        )
        table = pd.DataFrame(
            {
                "figure": [figure_label(k) for k in mine],
                "version": list(mine.values()),
                "base model": [base.get(k) for k in mine],
            }
        )
        table["difference"] = table["version"] - table["base model"]
        st.dataframe(table, hide_index=True)
    else:
        st.caption("No eval figures recorded for this version.")

    data = manifest.get("data") or {}
    fit = manifest.get("training_rows") or {}
    counts, kept = st.columns(2)
    with counts:
        st.markdown(f"**Data** ({data.get('algo') or manifest.get('algo') or '?'} snapshot)")
        if data.get("counts"):
            st.dataframe(count_table(data["counts"], "signal"), hide_index=True)
        else:
            st.caption("No data snapshot recorded.")
    with kept:
        st.markdown("**Training rows**")
        if fit:
            st.write(
                f"{fit.get('kept', '?')} of {fit.get('given', '?')} kept, "
                f"{fit.get('shortened', 0)} shortened (max length {fit.get('max_length', '?')})."
            )
            if fit.get("dropped"):
                st.dataframe(count_table(fit["dropped"], "dropped because"), hide_index=True)
        else:
            st.caption("Not recorded.")

    metrics = {k: v for k, v in (manifest.get("metrics") or {}).items() if v is not None}
    if metrics:
        st.markdown("**Training metrics**")
        st.dataframe(
            pd.DataFrame({"metric": list(metrics), "value": [str(v) for v in metrics.values()]}),
            hide_index=True,
        )

    turn_ids = data.get("turn_ids") or {}
    turns = [(split, t) for split, ids in turn_ids.items() for t in ids]
    st.markdown(f"**Turns** it learned from and was checked on ({len(turns)})")
    if turns:
        st.dataframe(pd.DataFrame(turns, columns=["split", "turn id"]), hide_index=True)
    else:
        st.caption("No turn ids recorded.")


def show_versions(adapters: list[dict[str, Any]]) -> None:
    """The versions table, the eval figures over versions, and one expander per version."""
    st.subheader("Adapter versions")
    if not adapters:
        st.info("No adapter trained yet: the base model answers every chat.")
        return
    st.dataframe(version_rows(adapters), hide_index=True)

    st.markdown("**Eval figures over versions**")
    frame = eval_frame(adapters)
    if frame.empty:
        st.info(
            "No version has eval figures yet: `python -m app.eval --adapter NAME` measures "
            "one on questions training never saw (the flywheel bench records them)."
        )
    else:
        missing = [
            a["served_name"]
            for a in oldest_first(adapters)
            if a["served_name"] not in set(frame["version"])
        ]
        st.caption(
            "Measured on the evaluation pool, which training never asks; dashed: the base "
            "model in the same run."
            + (f" Without eval figures: {', '.join(missing)}." if missing else "")
        )
        st.altair_chart(eval_chart(frame))

    for a in adapters:
        gate = gate_word(a.get("manifest") or {})
        label = f"{a['served_name']} · {a['status']}" + (f" · gate {gate}" if gate else "")
        with st.expander(label):
            version_details(a)
