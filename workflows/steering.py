"""``steering=`` on ``armflow evaluate`` / ``armflow deploy``: the YAML's steering block -> ``steer(policy, spec)``,
and the run summary's ``steering`` entry (the spec and the summarised per-chunk diagnostics).

The YAML lists every method's keys with null (null = the method's default), so ``steering.type=vgps
steering.critic=DIR steering.K=16`` needs no ``+``; a non-null key the chosen method does not have fails listing
its valid keys. GPC with ``weights`` null searches the weights on a few episodes first (``gpc_search``; evaluate
only: the search needs the simulator). ITPS runs add ``alignment_m_mean`` and ``guidance_norm_mean`` to the
summarised diagnostics; its interactive viewer is ``armflow.workflows.itps_viewer``.
"""
from __future__ import annotations

from typing import Callable

SEARCH_KEYS = ("search_episodes", "search_grid")  # GPC's weight search (the workflow's, not the policy's)


def steering_spec(node) -> dict | None:
    """The YAML steering block -> a plain spec without null values, or None when ``type`` is null."""
    from armflow.configs import plain

    spec = {k: v for k, v in (plain(node) if node is not None else {}).items() if v is not None}
    return spec if spec.get("type") else None


def gpc_search(policy, spec: dict, score: Callable[[object], float]) -> tuple[dict, list[dict]]:
    """GPC's test-time weight search over two members: ``score(steered) -> success`` for every w in ``search_grid``
    (weights (1 - w, w)); returns the spec with the best weights (ties: the smaller w) and the table."""
    from armflow.policies.steering import steer

    if len(spec.get("policies") or ()) != 1:
        raise ValueError("steering.weights=null searches the weights of two policies; give steering.weights for "
                         f"{1 + len(spec.get('policies') or ())} policies")
    params = {k: v for k, v in spec.items() if k not in SEARCH_KEYS}
    table = []
    for w in spec.get("search_grid") or (0.0, 0.25, 0.5, 0.75, 1.0):
        trial = {**params, "weights": (1.0 - float(w), float(w))}
        table.append({"weights": list(trial["weights"]), "success_rate": float(score(steer(policy, trial)))})
        print(f"[steering] gpc weights {trial['weights']}: success {table[-1]['success_rate']:.2f}", flush=True)
    best = max(table, key=lambda r: (r["success_rate"], -r["weights"][1]))
    return {**params, "weights": tuple(best["weights"])}, table


def apply_steering(policy, node, search: Callable[[object], float] | None = None):
    """(steered policy or the policy itself, the run's steering entry). ``search(steered) -> success`` runs GPC's
    weight search when weights are null."""
    from armflow.policies.steering import steer

    spec = steering_spec(node)
    if spec is None:
        return policy, None
    entry: dict = {}
    if spec["type"] == "gpc" and not spec.get("weights"):
        if search is None:
            raise ValueError("steering.weights: give GPC's weights (the weight search runs in `armflow evaluate`)")
        spec, entry["gpc_search"] = gpc_search(policy, spec, search)
    spec = {k: v for k, v in spec.items() if k not in SEARCH_KEYS}
    steered = steer(policy, spec)
    entry["spec"] = steered.steering
    return steered, entry


def steering_summary(policy, entry: dict | None) -> dict | None:
    """The run summary's ``steering``: spec (+ GPC search) and the summarised per-chunk diagnostics."""
    from armflow.policies.steering import summarise_diagnostics

    if entry is None:
        return None
    diagnostics = getattr(policy, "diagnostics", [])
    summary = summarise_diagnostics(diagnostics)
    for key in ("alignment_m", "guidance_norm"):  # ITPS: distance of the executed chunks, |g| per level
        values = [v for d in diagnostics for v in d.get(key) or ()]
        if values:
            summary[f"{key}_mean"] = float(sum(values) / len(values))
    return {**entry, "diagnostics": summary}

