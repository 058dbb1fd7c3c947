"""Fitting a Pipeline's drafting to this machine from measured costs (`Pipeline.autotune`).

Chain drafters get the draft length that maximises expected tokens per second under
`core.autotune`'s cost model (verify cost per token count measured once per machine, acceptance
and draft cost observed on the caller's prompts). Drafters that can also draft trees get the
model's best chain and best dynamic tree, and both are timed on the same prompts: the faster is
kept, so the shape used is whichever pays on this machine. Outputs stay exact whatever is chosen.
"""

from __future__ import annotations

import time
from typing import Sequence

from .core.drafter import Drafter
from .core.schedule import ScheduleConfig


def autotune(pipe, pairs: Sequence[tuple], *, max_new_tokens: int = 48) -> str:
    """Fit the drafting to this machine: chain length, or chain vs dynamic tree (tree drafters).

    Verify costs per token count are measured once per machine and model (cached under
    $VLMSPEC_HOME); acceptance and draft cost are observed by generating for `pairs`. A
    drafter that can draft trees gets the best chain and the best tree shape under the cost
    model, then both are timed on `pairs` and the faster is kept (a tree's level costs more
    than a chain step, which the model cannot know from a chain run). Returns a one-line
    summary of the choice; outputs stay exact whatever is chosen.
    """
    from .core.autotune import TreeGrid, choose_chain_length, choose_tree, load_or_measure

    results = [pipe.generate(image, prompt, max_new_tokens=max_new_tokens) for image, prompt in pairs]
    steps = sum(r.metrics.target_forwards - 1 for r in results)
    drafted = sum(r.metrics.mean_draft_length * (r.metrics.target_forwards - 1) for r in results)
    draft_seconds = sum(r.metrics.draft_seconds for r in results)
    positions = max((len(r.metrics.acceptance_per_position) for r in results), default=0)
    acceptance = [
        sum(r.metrics.acceptance_per_position[i] for r in results if len(r.metrics.acceptance_per_position) > i)
        / sum(1 for r in results if len(r.metrics.acceptance_per_position) > i)
        for i in range(positions)
    ] or [0.0]
    per_level = draft_seconds / drafted if drafted else 0.0  # a chain token or a tree level
    grid = TreeGrid()
    tree_drafter = pipe.drafter.with_tree(min(grid.total_tokens), min(grid.depth), min(grid.top_k))
    chain_costs = load_or_measure(pipe.target, tuple(range(1, pipe.schedule.max_length + 2)))
    k = choose_chain_length(chain_costs, per_level, acceptance, max_length=pipe.schedule.max_length)
    chain_summary = f"chain draft length {k} (acceptance by position {[round(a, 2) for a in acceptance]}, {steps} steps observed)"
    if tree_drafter is None:
        pipe.schedule = ScheduleConfig(kind="fixed", draft_length=k)
        return chain_summary
    costs = load_or_measure(pipe.target, (1, 2, 4, 8, 16, 32, max(grid.total_tokens) + 1))
    choice = choose_tree(costs, per_level, acceptance, grid)
    tree = (pipe.drafter.with_tree(choice.total_tokens, choice.depth, choice.top_k),
            ScheduleConfig(kind="fixed", draft_length=choice.depth))
    chain_drafter = pipe.drafter.chain_drafter(k) if k > 0 else None
    chain = ((chain_drafter or pipe.drafter), ScheduleConfig(kind="fixed", draft_length=k))
    speed = {name: measure_speed(pipe, *shape, pairs, max_new_tokens) for name, shape in
             (("chain", chain), ("tree", tree))}
    pipe.drafter, pipe.schedule = tree if speed["tree"] > speed["chain"] else chain
    measured = f"measured {speed['chain']:.1f} tok/s chain vs {speed['tree']:.1f} tok/s tree"
    if speed["tree"] > speed["chain"]:
        return (f"dynamic tree total_tokens={choice.total_tokens} depth={choice.depth} top_k={choice.top_k} "
                f"(expected tau {choice.expected_tokens:.2f}, {steps} steps observed; {measured})")
    return f"{chain_summary}; {measured}"


def measure_speed(pipe, drafter: Drafter, schedule: ScheduleConfig, pairs, max_new_tokens: int) -> float:
    """New tokens per second of greedy generation for `pairs` with that drafter and schedule."""
    kept = pipe.drafter, pipe.schedule
    pipe.drafter, pipe.schedule = drafter, schedule
    try:
        start = time.perf_counter()
        tokens = sum(len(pipe.generate(image, prompt, max_new_tokens=max_new_tokens).token_ids)
                     for image, prompt in pairs)
        return tokens / max(time.perf_counter() - start, 1e-9)
    finally:
        pipe.drafter, pipe.schedule = kept
