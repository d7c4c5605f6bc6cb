"""Per-instance, reversible changes of a model: hooks and forward overrides.

Every change is recorded with its undo step; leaving the :class:`ModelPatch` block
undoes them in reverse order, also when an exception is raised inside. Nothing is
changed on a class or a module-level object, so a second model in the same process is
never affected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class ModelPatch:
    """A set of undoable changes to one model; use as a ``with`` block."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._undo: list[Callable[[], None]] = []
        self._was_training = model.training
        # quantities a rule set collects for the engines (e.g. "sink": the relevance attnlrp-sink holds apart)
        self.accounts: dict[str, Any] = {}

    # -- changes --------------------------------------------------------------------
    def hook_output(self, module: nn.Module, fn: Callable[[nn.Module, tuple, Any], Any]) -> None:
        """Replace ``module``'s output by ``fn(module, args, output)``."""
        handle = module.register_forward_hook(fn)
        self._undo.append(handle.remove)

    def override_forward(self, module: nn.Module, make: Callable[[Callable], Callable]) -> None:
        """Replace ``module``'s forward by ``make(original_forward)`` on this instance only.

        Modules wrapped by accelerate (``device_map``/offload) call ``_old_forward``
        between loading and offloading their weights; the override goes there.
        """
        attr = "_old_forward" if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else "forward"
        had_own = attr in module.__dict__
        previous = module.__dict__.get(attr)
        original = getattr(module, attr)
        setattr(module, attr, make(original))

        def undo() -> None:
            if had_own:
                setattr(module, attr, previous)
            else:
                delattr(module, attr)

        self._undo.append(undo)

    def replace_attribute(self, owner: nn.Module, name: str, value: Any) -> None:
        """Set ``owner.name = value`` (a plain attribute of this instance, e.g. its config) until the block ends.

        An attribute ``owner`` did not have is removed again at the end.
        """
        had = hasattr(owner, name)
        previous = getattr(owner, name, None)
        setattr(owner, name, value)

        def undo() -> None:
            if had:
                setattr(owner, name, previous)
            else:
                delattr(owner, name)

        self._undo.append(undo)

    def on_exit(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    # -- context --------------------------------------------------------------------
    def restore(self) -> None:
        errors: list[BaseException] = []
        while self._undo:
            try:
                self._undo.pop()()
            except BaseException as exc:  # keep undoing the rest
                errors.append(exc)
        self.model.train(self._was_training)
        if errors:
            raise errors[0]

    def __enter__(self) -> ModelPatch:
        self.model.eval()  # dropout is the identity under every rule
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def freeze_parameters(model: nn.Module, patch: ModelPatch) -> None:
    """No parameter gradients are needed: stop autograd from keeping tensors for them (undone on exit)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)

    def restore() -> None:
        for p, flag in flags:
            p.requires_grad_(flag)

    patch.on_exit(restore)


def output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
