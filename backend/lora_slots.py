"""Which LoRA adapter versions have their weights in the model, and in which peft slot.

* Every adapter load is a new version with its own id inside the peft model; a group keeps
  the version it started with, and a version's weights are deleted only when no request
  holds it, so a stream is never switched to other weights halfway (load in place or
  unload mid-stream included).
* Adapter weights live in peft "slots" (adapter names inside the peft model). A slot holds
  one adapter version at a time; when a version is unloaded or evicted its slot is kept and
  refilled by the next adapter with the same LoRA shape by copying tensors in place, which
  is what makes a hot-swap cost milliseconds instead of a peft re-injection that walks the
  whole model. At most ``max_loras`` slots exist, except while more versions are in use by
  running requests.

Everything here runs on the engine's worker thread only.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from backend.adapters import AdapterError, AdapterRegistry, LoadedAdapter

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot:
    """A peft adapter name whose weights hold one adapter version at a time."""

    name: str
    signature: str | None
    params: dict[str, Any]  # key as saved by peft → the slot's parameter
    version: LoadedAdapter | None = None


def _lora_signature(config: dict[str, Any]) -> str | None:
    """What must match for one LoRA's weights to be copied into another's slot.

    None for adapters with parts beyond plain A/B matrices (DoRA, biases, extra modules):
    those always get a fresh slot.
    """
    if (
        config.get("use_dora")
        or config.get("modules_to_save")
        or config.get("bias", "none") != "none"
    ):
        return None
    targets = config.get("target_modules")
    keys = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform")
    shape = {k: config.get(k) for k in keys}
    shape["target_modules"] = sorted(targets) if isinstance(targets, list) else targets
    shape["exclude_modules"] = config.get("exclude_modules")
    return json.dumps(shape, sort_keys=True, default=str)


class LoraSlots:
    """The peft slots of one model and the adapter versions resident in them."""

    def __init__(self, model: Any, device: str, registry: AdapterRegistry, max_loras: int) -> None:
        self.model = model
        self.device = device
        self.registry = registry
        self.max_loras = max_loras
        self._peft: Any = None
        self._tuner_layers: list[Any] = []
        self._slots: dict[str, _Slot] = {}
        self._slot_ids = itertools.count()
        self._resident: OrderedDict[str, _Slot] = OrderedDict()
        self._active_slot: str | None = None

    def make_resident(self, version: LoadedAdapter, busy: Collection[str | None] = ()) -> None:
        """Put ``version``'s weights in a slot; ``busy``: uids that running groups decode on."""
        if version.uid in self._resident:
            self._resident.move_to_end(version.uid)
            return
        started = time.perf_counter()
        signature = _lora_signature(version.spec.config)
        slot = next(
            (
                s
                for s in self._slots.values()
                if s.version is None and signature is not None and s.signature == signature
            ),
            None,
        )
        how = "refilled"
        if slot is None or not self._fill(slot, version):
            self._make_room(busy)
            slot = self._inject(version, signature)
            how = "injected"
        slot.version = version
        self._resident[version.uid] = slot
        logger.info(
            "adapter %s (%s) resident in slot %s (%s) in %.0f ms",
            version.name,
            version.uid,
            slot.name,
            how,
            1000 * (time.perf_counter() - started),
        )

    def drop_retired(self) -> None:
        """Free the slots of retired versions no request holds; trim slots to ``max_loras``."""
        for version in self.registry.collect_retired():
            if version.uid in self._resident:
                self._free(version.uid)
        while len(self._slots) > self.max_loras:
            free = next((s for s in self._slots.values() if s.version is None), None)
            if free is None:
                return
            self._delete_slot(free)

    def activate(self, uid: str | None) -> None:
        """Make the slot of version ``uid`` (None: the base model) the one every layer uses."""
        slot = None if uid is None else self._resident[uid].name
        if slot == self._active_slot or (slot is None and not self._tuner_layers):
            return
        for layer in self._tuner_layers:
            if slot is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(slot, inference_mode=True)
        self._active_slot = slot

    def _fill(self, slot: _Slot, version: LoadedAdapter) -> bool:
        """Copy ``version``'s weights into a free slot of the same shape; False if they differ."""
        state = version.spec.weights
        if (
            not state
            or state.keys() != slot.params.keys()
            or any(state[k].shape != slot.params[k].shape for k in state)
        ):
            return False
        for key, tensor in state.items():
            slot.params[key].copy_(tensor)
        return True

    def _inject(self, version: LoadedAdapter, signature: str | None) -> _Slot:
        """Add a peft slot holding ``version``; on any failure the model is left as it was."""
        name = f"slot{next(self._slot_ids)}"
        try:
            params = self._load_into_peft(version, name)
        except Exception as exc:
            self._undo_slot(name)
            if isinstance(exc, AdapterError):
                raise
            raise AdapterError(
                f"Loading LoRA adapter '{version.name}' from {version.spec.path} failed: {exc}. "
                "Is it an adapter for the served model's architecture?",
                400,
            ) from exc
        slot = _Slot(name=name, signature=signature, params=params)
        self._slots[name] = slot
        self._refresh_layers()
        return slot

    def _load_into_peft(self, version: LoadedAdapter, name: str) -> dict[str, Any]:
        """peft-inject ``version`` as adapter ``name``; its parameters by saved key."""
        from peft import PeftModel

        path = str(version.spec.path)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(
                self.model, path, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
            )
        else:
            self._peft.load_adapter(
                path, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
            )
        marker = f".{name}."
        params = {
            key.replace(marker, "."): param
            for key, param in self._peft.named_parameters()
            if marker in key
        }
        # A tensor peft never filled stays on the meta device and breaks every later load.
        missing = sorted(k for k, p in params.items() if p.is_meta)
        if not params or missing:
            raise AdapterError(
                f"LoRA adapter '{version.name}' does not fit the served model: "
                f"{len(missing) or 'all'} of its tensors found no module "
                f"({', '.join(missing[:3]) or 'no LoRA layer was created'}).",
                400,
            )
        self._peft.to(self.device)
        return params

    def _undo_slot(self, name: str) -> None:
        """Remove whatever a failed injection of adapter ``name`` left in the model."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._peft is not None and name in self._peft.peft_config:
            self._peft.delete_adapter(name)
        # A failed first load leaves LoRA layers in the bare model with no PeftModel around.
        for module in self.model.modules():
            if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {}):
                module.delete_adapter(name)
        self._refresh_layers()  # the next activate() sets every layer again

    def _make_room(self, busy: Collection[str | None]) -> None:
        """Free slots until a new one fits under ``max_loras`` (LRU idle versions first)."""
        while len(self._slots) >= self.max_loras:
            free = next((s for s in self._slots.values() if s.version is None), None)
            if free is not None:
                self._delete_slot(free)
                continue
            idle = next(
                (
                    v
                    for uid, slot in self._resident.items()
                    if (v := slot.version) is not None
                    and uid not in busy
                    and not self.registry.in_use(v)
                ),
                None,
            )
            if idle is None:
                return  # every resident adapter is in use: go above max_loras for now
            logger.info("evicting idle adapter %s (%s) from memory (LRU)", idle.name, idle.uid)
            self._free(idle.uid)

    def _free(self, uid: str) -> None:
        slot = self._resident.pop(uid)
        slot.version = None

    def _delete_slot(self, slot: _Slot) -> None:
        del self._slots[slot.name]
        if self._active_slot == slot.name:
            self._active_slot = None
        self._peft.delete_adapter(slot.name)
        self._refresh_layers()

    def _refresh_layers(self) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._tuner_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        self._active_slot = "?"  # force the next activate to set every layer
