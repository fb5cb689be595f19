"""Continuous batching: the rows decoded together, and how batches grow and shrink.

* Requests on the same adapter version that are waiting together become one *group*,
  decoded as one left-padded batch with a KV cache (one forward pass per new token, never
  the whole prompt again). Groups on different adapters are stepped in turn, and before
  each forward pass exactly one adapter is made active: no forward pass mixes adapters.
* A request that arrives while a group on its adapter is running starts as a group of its
  own (its prompt needs a full forward pass) and is then merged into the running group by
  left-padding the shorter KV cache with masked zeros; finished rows are cut out of the
  batch and its cache at once, so they cost nothing afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend.sampling import ChoiceSampler

if TYPE_CHECKING:
    import torch

    from backend.engine import GenerationRequest


class Row(ChoiceSampler):
    """One sequence being decoded (a choice of a request)."""

    def __init__(self, req: GenerationRequest, index: int, tokenizer: Any, device: str) -> None:
        super().__init__(req.params, index, tokenizer, device, req.prompt_ids)
        self.req = req


class Group:
    """Rows decoded together, all on one adapter version, sharing one KV cache."""

    def __init__(self, uid: str | None, rows: list[Row]) -> None:
        self.uid = uid
        self.rows = rows
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def next_inputs(
        self, pad_id: int, device: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, attention mask and positions of the next forward pass.

        The whole left-padded prompts on the first pass, then only the last sampled tokens.
        """
        import torch

        if self.cache is None:
            prompts = [r.req.prompt_ids for r in self.rows]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor(
                [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device
            )
            return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
        assert self.mask is not None and self.positions is not None
        assert self.last is not None
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        return self.last, mask, self.positions[:, -1:] + 1


def make_groups(
    uid: str | None,
    reqs: list[GenerationRequest],
    max_num_seqs: int,
    tokenizer: Any,
    device: str,
) -> tuple[list[Group], list[tuple[GenerationRequest, Exception]]]:
    """New groups for requests on one adapter, none over ``max_num_seqs`` rows.

    A request whose rows cannot be set up is returned with its error instead, so it fails
    alone and the worker goes on.
    """
    groups: list[Group] = []
    failed: list[tuple[GenerationRequest, Exception]] = []
    rows: list[Row] = []
    for req in reqs:
        try:
            new = [Row(req, i, tokenizer, device) for i in range(req.n)]
        except Exception as exc:
            failed.append((req, exc))
            continue
        if rows and len(rows) + len(new) > max_num_seqs:
            groups.append(Group(uid, rows))
            rows = []
        rows += new
    if rows:
        groups.append(Group(uid, rows))
    return groups, failed


def compact(group: Group, device: str) -> list[GenerationRequest]:
    """Drop finished rows from the batch (and their KV cache); return requests now done."""
    keep = [i for i, row in enumerate(group.rows) if not row.finished]
    if len(keep) == len(group.rows):
        return []
    done: list[GenerationRequest] = []
    for row in group.rows:
        if row.finished:
            row.req.rows_left -= 1
            if row.req.rows_left <= 0:
                done.append(row.req)
    if keep and group.cache is not None:
        import torch

        assert group.mask is not None and group.positions is not None
        assert group.last is not None
        idx = torch.tensor(keep, device=device)
        for layer in group.cache.layers:
            layer.batch_select_indices(idx)
        group.mask, group.positions = group.mask[idx], group.positions[idx]
        group.last = group.last[idx]
    group.rows = [group.rows[i] for i in keep]
    return done


def merge_groups(groups: list[Group], max_num_seqs: int) -> None:
    """Fold groups decoding on the same adapter into one batch, in place."""
    first: dict[str | None, Group] = {}
    for group in list(groups):
        if group.cache is None or not group.rows or not _mergeable(group.cache):
            continue
        into = first.get(group.uid)
        if into is None or len(into.rows) + len(group.rows) > max_num_seqs:
            first[group.uid] = group
            continue
        _merge(into, group)
        groups.remove(group)


def _mergeable(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return t
    import torch

    shape = list(t.shape)
    shape[dim] = width
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(into: Group, other: Group) -> None:
    """Append ``other``'s rows to ``into``, left-padding the shorter KV cache with masked zeros."""
    import torch

    assert into.mask is not None and other.mask is not None
    assert into.positions is not None and other.positions is not None
    assert into.last is not None and other.last is not None
    t1, t2 = into.mask.shape[1], other.mask.shape[1]
    width = max(t1, t2)
    for mine, theirs in zip(into.cache.layers, other.cache.layers, strict=True):
        mine.keys = torch.cat(
            [_left_pad(mine.keys, width - t1, -2), _left_pad(theirs.keys, width - t2, -2)]
        )
        mine.values = torch.cat(
            [_left_pad(mine.values, width - t1, -2), _left_pad(theirs.values, width - t2, -2)]
        )
    into.mask = torch.cat(
        [_left_pad(into.mask, width - t1, 1), _left_pad(other.mask, width - t2, 1)]
    )
    into.positions = torch.cat([into.positions, other.positions])
    into.last = torch.cat([into.last, other.last])
    into.rows += other.rows
