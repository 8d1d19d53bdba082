"""What the SAC learner holds, apart from its update: `LearnerState`, the base of `SACLearner`
(agents/sac/learning.py, which builds the networks, optimizers and temperatures and runs the update).

    hooks' parameters    add_hook_parameters: a param group in their network's optimizer
    ranks                synced_tensors: what data-parallel ranks must hold alike
    learning rates       lr_factor (agents/sac/lr_schedule.py), applied before every update
    divergence           finite_so_far (no wait for the device), nonfinite (waits)
    checkpoints          state_dict / load_state_dict, the optimizers' on their own (ranks whose
                         optimizer states differ), reset_optimizers (Continual World's per task)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agents.hooks import LearnerHook
from agents.sac.lr_schedule import lr_factor


class LearnerState:
    """Reads what SACLearner.__init__ sets: cfg, device, actor, critic, critic_target, log_alpha,
    params, optimizers, balancers, hook_tensors, num_updates, schedule_updates, all_finite and
    _finite_copy."""

    def add_hook_parameters(self, hooks: Sequence[LearnerHook]) -> None:
        """Give the hooks' own parameters a param group in their network's optimizer, and keep
        what the hooks' tensors ranks must agree on (`synced_tensors`) beside the networks'."""
        for network in ("actor", "critic"):
            if own := [p for hook in hooks for p in hook.parameters(network)]:
                self.optimizers[network].add_param_group({"params": own})
                self.params[network] += own
        self.hook_tensors = {net: {f"hook{i}.{name}": t for i, hook in enumerate(hooks)
                                   for name, t in hook.synced_tensors(net).items()} for net in ("actor", "critic")}

    def synced_tensors(self) -> dict[str, torch.Tensor]:
        """{name: tensor} of everything learned that data-parallel ranks must hold alike: every
        network's state (actor, critic, target critic: the encoder and task embeddings in them),
        the temperatures and the hooks' tensors (auxiliary heads and PVN's targets). Read from the
        modules' state dicts, not from the optimizers' lists, so a tensor the local-SGD average
        misses still shows in the cross-rank check."""
        out = {f"{name}.{key}": value for name, module in (("actor", self.actor), ("critic", self.critic),
                                                           ("critic_target", self.critic_target))
               for key, value in module.state_dict(keep_vars=True).items()}
        out["log_alpha"] = self.log_alpha
        for tensors in self.hook_tensors.values():
            out.update(tensors)
        return out

    def lr_factor(self, update: int | None = None) -> float:
        """The learning-rate schedule's factor for update `update` (0-based; None: the next one)."""
        c = self.cfg
        return lr_factor(c.lr_schedule, self.num_updates if update is None else update, self.schedule_updates,
                         c.lr_warmup_updates, c.lr_final_fraction)

    def _set_learning_rates(self) -> None:
        if self.cfg.lr_schedule == "constant" and not self.cfg.lr_warmup_updates:
            return
        factor = self.lr_factor()
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    def finite_so_far(self) -> bool:
        """Was every loss so far finite? Read without waiting for the device: on a GPU this is the
        flag as an earlier call's asynchronous copy found it: as many updates late as the GPU runs
        behind the host (a single byte: it reads the old or the new value). The checks before
        every evaluation and checkpoint, `nonfinite`, wait for the device."""
        if self.device.type != "cuda":
            return bool(self.all_finite)
        finite = bool(self._finite_copy)
        self._finite_copy.copy_(self.all_finite, non_blocking=True)
        return finite

    def nonfinite(self) -> str | None:
        """Why the learner diverged (a non-finite loss since it was built, or non-finite weights),
        or None. Reads the device: call it at log/checkpoint points, not in the update."""
        if not bool(self.all_finite):
            return "a non-finite loss"
        for name, module in (("actor", self.actor), ("critic", self.critic)):
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                return f"non-finite {name} weights"
        if not bool(torch.isfinite(self.log_alpha).all()):
            return "a non-finite temperature"
        return None

    def reset_optimizers(self) -> None:
        """Fresh optimizer state (Continual World does this at every new task)."""
        for optimizer in self.optimizers.values():
            optimizer.state.clear()

    def optimizer_state_dicts(self) -> dict:
        return {f"{net}_optimizer": optimizer.state_dict() for net, optimizer in self.optimizers.items()}

    def load_optimizer_state_dicts(self, state: dict) -> None:
        for net, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[f"{net}_optimizer"])

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach(),
            **self.optimizer_state_dicts(), "num_updates": self.num_updates,
            "balancers": {net: b.state_dict() for net, b in self.balancers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.load_optimizer_state_dicts(state)
        self.num_updates = state["num_updates"]
        for net, balancer in self.balancers.items():
            balancer.load_state_dict(state.get("balancers", {}).get(net, {}))
