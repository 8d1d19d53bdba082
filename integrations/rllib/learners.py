"""Custom RLlib Learners: our auxiliary losses and continual strategies inside RLlib's SAC update.

RLlib's SACTorchLearner.compute_gradients backpropagates the losses it stored per optimizer
(`_temp_losses[(module, "qf_loss" | "qf_twin_loss" | "policy_loss" | "alpha_loss")]`) and ignores
the loss compute_loss_for_module returns, so an extra loss added to the returned total would be
silently dropped. `RLlibSACLearner` therefore adds every learner hook's loss terms (auxiliary tasks,
a continual strategy's penalty; agents/hooks.py) to the *stored* loss of the network they belong
to, and puts the hooks' own parameters (auxiliary heads) in that network's optimizer.

Optimizers: our twin critics are one fused network, so the two critic losses are summed into one
"qf" loss for one Adam over the critic (the same update as RLlib's two Adams: the twins' parameters
are disjoint and Adam is elementwise; a shared encoder gets both critics' gradients, as in our loop).
"policy" trains the actor's own parameters (not a shared encoder, which the actor reads detached),
"alpha" the one temperature.

The continual strategy (learner_config_dict["continual"]) runs here: its penalty joins the losses;
its before_step / after_step (PackNet's gradient masks and frozen weights) wrap apply_gradients;
the driver (launch/rllib_engine.py) calls its task hooks through `foreach_learner`. A-GEM, replay,
behaviour cloning and hnet need our replay or their own update path and are refused by the engine.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns

from agents.replay import Batch
from continual.strategies import make_strategy
from integrations.rllib.modules import CRITIC_FEATURES


class _LearnerView:
    """What a continual strategy reads of "the learner": the networks, the device, and a way to
    reset the optimizers (PackNet's retraining)."""

    def __init__(self, module, optimizers):
        self.actor, self.critic, self.device, self._optimizers = module.actor, module.critic, module.device, optimizers

    def reset_optimizers(self) -> None:
        for optimizer in self._optimizers():
            optimizer.state = defaultdict(dict)


class RLlibSACLearner(SACTorchLearner):
    def build(self) -> None:
        super().build()
        extra = self.config.learner_config_dict
        self.strategy = None
        if extra.get("continual"):
            module = self.module[self._single_module_id()].unwrapped()
            view = _LearnerView(module, lambda: [o for _, o in self._named_optimizers.items()])
            self.strategy = make_strategy(SimpleNamespace(**extra["continual"]), view, list(extra["task_stage"]),
                                          int(extra.get("seed", 0)))

    def _single_module_id(self):
        (module_id,) = list(self.module.keys())
        return module_id

    def hooks(self, module) -> list:
        return [*module.aux_tasks, *([self.strategy] if self.strategy is not None else [])]

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id].unwrapped()
        hooks = module.aux_tasks  # the strategy is built later and owns no parameters
        groups = {"qf": (list(module.critic.parameters()), config.critic_lr, "critic"),
                  "policy": (module.actor.own_parameters(), config.actor_lr, "actor")}
        for name, (params, lr, network) in groups.items():
            params = params + [p for hook in hooks for p in hook.parameters(network)]
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params, eps=1e-7), params=params, lr_or_lr_schedule=lr)
        temperature = self.curr_log_alpha[module_id]
        self.register_optimizer(module_id=module_id, optimizer_name="alpha",
                                optimizer=torch.optim.Adam([temperature], eps=1e-7), params=[temperature],
                                lr_or_lr_schedule=config.alpha_lr)

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        total = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        module = self.module[module_id].unwrapped()
        losses = self._temp_losses
        losses[(module_id, "qf_loss")] = losses[(module_id, "qf_loss")] + losses.pop((module_id, "qf_twin_loss"))
        obs, task = module.split(batch[Columns.OBS])
        ours = Batch(obs, batch[Columns.ACTIONS], batch[Columns.REWARDS], module.split(batch[Columns.NEXT_OBS])[0],
                     batch[Columns.TERMINATEDS].float(), task)
        for network, key, features in (("critic", "qf_loss", fwd_out[CRITIC_FEATURES]), ("actor", "policy_loss", None)):
            for hook in self.hooks(module):
                for name, term in hook.loss_terms(network, ours, features).items():
                    losses[(module_id, key)] = losses[(module_id, key)] + term
                    self.metrics.log_value((module_id, f"loss/{name}"), term.detach(), window=1)
        return total

    def apply_gradients(self, gradients_dict) -> None:
        networks = ("critic", "actor")
        module = self.module[self._single_module_id()].unwrapped()
        hooks = self.hooks(module)
        for hook in hooks:
            hook.before_step(networks)
        super().apply_gradients(gradients_dict)
        for hook in hooks:
            hook.after_step(networks)

    # -- called by the driver through foreach_learner ----------------------------------------------
    def policy_vector(self) -> torch.Tensor:
        """The actor's weights as one flat CPU vector (the order build_policy's parameters have)."""
        module = self.module[self._single_module_id()].unwrapped()
        return torch.nn.utils.parameters_to_vector(module.actor.parameters()).detach().cpu()
