"""polytask's networks as RLlib RLModules (new API stack, torch).

`SACModule`: our multi-task SAC actor (agents.networks.SquashedGaussianActor) and fused twin
critic (TwinCritic), with every trunk, head (hypernetwork heads included), task embedding and
shared encoder of `sac.*`, plus the auxiliary heads of `aux.*`. Its `_forward_train` has the
shape of RLlib's DefaultSACTorchRLModule._forward_train and emits the keys SACTorchLearner reads
(qf_preds, qf_twin_preds, action_dist_inputs(_next), logp_resampled, logp_next_resampled,
q_curr with the critic's parameters frozen (the straight-through pass), q_target_next), plus
the critic's trunk features for auxiliary losses. `PPOModule`: a task-conditioned Gaussian policy
and value network for RLlib's PPO (ValueFunctionAPI).

The observation is [obs, one_hot(task)] (integrations/rllib/env.py): the module splits it and
hands our networks (obs, task index), so per-task heads are chosen by task id exactly as in our
own loop. Env runners build the module with inference_only=True: only the actor (and its copy
of a shared encoder), whose parameter names match the learner's, so RLlib's weight sync to them
sends the policy only.

Deviations from our own loop, from running RLlib's SAC loss as is (SACTorchLearner): the critic
loss is Huber (delta 1), not the mean squared error; one temperature per module (as our
`sac.shared_temperature`), not one per task; Adam's eps is 1e-7; replay is RLlib's, not sampled
task-balanced. Exploration samples through RLlib's TorchSquashedGaussian, which clamps log-std to
[-5, 2] on the env runners (our default range; `sac.log_std_min` below -5 is clipped there only).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.auxiliary import AuxConfig, make_auxiliary_tasks
from agents.networks import TaskNetwork, build_actor_and_critic, build_policy, network_options
from agents.sac.config import SACConfig

try:  # ray[rllib] is an optional extra; this module is only imported by the RLlib engine
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian, TorchSquashedGaussian
    from ray.rllib.core.learner.utils import make_target_network
    from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI, ValueFunctionAPI
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
except ImportError as e:  # pragma: no cover
    raise ImportError("the RLlib engine needs ray[rllib]: pip install -e '.[rllib]'") from e

CRITIC_FEATURES = "polytask_critic_features"  # the critic trunk's output in the loss pass [2, B, H]
AUX_DRAWS = "aux_pvn_draws"  # module-state key: PVN's action-draw generator state (not a module tensor)


def sac_config(model_config: dict) -> SACConfig:
    tree = dict(model_config["sac"])
    for key in ("hidden_sizes", "critic_hidden_sizes", "encoder_sizes"):
        tree[key] = tuple(tree[key])
    return SACConfig(**tree)


class _TaskSplit:
    """Splits RLlib's flat observation [obs, one_hot(task)] into (obs, task index); names the
    action distribution for inference, exploration and training alike."""

    num_tasks: int
    dist_cls: type

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return flat[..., :-self.num_tasks], flat[..., -self.num_tasks:].argmax(-1)

    def get_inference_action_dist_cls(self):
        return self.dist_cls

    def get_exploration_action_dist_cls(self):
        return self.dist_cls

    def get_train_action_dist_cls(self):
        return self.dist_cls


class SACModule(_TaskSplit, TorchRLModule, InferenceOnlyAPI, TargetNetworkAPI):
    """model_config: {"sac": SACConfig fields, "aux": AuxConfig fields, "num_tasks": T, "seed": s}."""

    dist_cls = TorchSquashedGaussian

    def setup(self):
        self.num_tasks = int(self.model_config["num_tasks"])
        self.cfg = sac_config(self.model_config)
        obs_dim = self.observation_space.shape[0] - self.num_tasks
        action_dim = self.action_space.shape[0]
        if self.inference_only:
            self.actor = build_policy(self.cfg, obs_dim, action_dim, self.num_tasks)
            return
        self.actor, self.critic = build_actor_and_critic(self.cfg, obs_dim, action_dim, self.num_tasks)
        # Auxiliary tasks read this module as their "learner" (actor, critic, critic_target, cfg, device).
        self.aux_tasks = make_auxiliary_tasks(AuxConfig(**self.model_config.get("aux", {})), self, obs_dim,
                                              action_dim, int(self.model_config.get("seed", 0)))
        self.aux = torch.nn.ModuleList([task.head for task in self.aux_tasks])

    @property
    def device(self) -> torch.device:
        return next(self.actor.parameters()).device

    # -- what env runners call -------------------------------------------------------------
    def _dist_inputs(self, flat_obs: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.actor(*self.split(flat_obs))
        return torch.cat([mean, log_std], dim=-1)

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self._dist_inputs(batch[Columns.OBS])}

    # -- what SACTorchLearner reads ----------------------------------------------------------
    def _forward_train(self, batch, **kwargs):
        obs, task = self.split(batch[Columns.OBS])
        next_obs, _ = self.split(batch[Columns.NEXT_OBS])
        q, features = self.critic(obs, batch[Columns.ACTIONS], task, with_features=True)
        out = {"qf_preds": q[0], "qf_twin_preds": q[1], CRITIC_FEATURES: features}
        out[Columns.ACTION_DIST_INPUTS] = self._dist_inputs(batch[Columns.OBS])
        out["action_dist_inputs_next"] = self._dist_inputs(batch[Columns.NEXT_OBS])
        action, out["logp_resampled"] = self.actor.sample(obs, task)
        with torch.no_grad():
            next_action, logp_next = self.actor.sample(next_obs, task)
            out["logp_next_resampled"] = logp_next
            out["q_target_next"] = self.critic_target(next_obs, next_action, task).min(0).values
        # The straight-through pass: the actor's loss reaches the actor through Q, never the critic.
        critic_params = [p for p in self.critic.parameters() if p.requires_grad]
        for p in critic_params:
            p.requires_grad_(False)
        out["q_curr"] = self.critic(obs, action, task).min(0).values
        for p in critic_params:
            p.requires_grad_(True)
        return out

    # -- TargetNetworkAPI --------------------------------------------------------------------
    def make_target_networks(self):
        self.critic_target = make_target_network(self.critic)

    def get_target_network_pairs(self):
        return [(self.critic, self.critic_target)]

    def forward_target(self, batch, **kwargs):
        obs, task = self.split(batch[Columns.OBS])
        return self.critic_target(obs, batch[Columns.ACTIONS], task).min(0).values

    # -- InferenceOnlyAPI ----------------------------------------------------------------------
    def get_non_inference_attributes(self):
        return ["critic", "critic_target", "aux"]

    # -- checkpoints: the module's tensors plus PVN's action-draw stream --------------------------
    # ProtoValues.draws is a torch.Generator, not a module tensor: get_state adds its state (a
    # uint8 array, as our own loop's checkpoint keeps it) so an RLlib checkpoint resumes PVN's
    # drawn actions where they were; env runners (inference_only) never get it.
    def _draws(self) -> list[torch.Generator]:
        return [task.draws for task in getattr(self, "aux_tasks", ()) if hasattr(task, "draws")]

    def get_state(self, *args, **kwargs):
        state = super().get_state(*args, **kwargs)
        draws = self._draws()
        if draws and not kwargs.get("inference_only", False):
            state[AUX_DRAWS] = draws[0].get_state().numpy()
        return state

    def set_state(self, state) -> None:
        if AUX_DRAWS in state:
            state = dict(state)
            draws = torch.as_tensor(np.asarray(state.pop(AUX_DRAWS)), dtype=torch.uint8)
            for generator in self._draws():
                generator.set_state(draws.clone())
        super().set_state(state)


class PPOModule(_TaskSplit, TorchRLModule, InferenceOnlyAPI, ValueFunctionAPI):
    """A Gaussian policy pi(a | s, task) and a value V(s, task), two TaskNetworks built from
    `sac.*`'s network settings (trunk, head, task input); log-std bounded as our SAC actor's."""

    dist_cls = TorchDiagGaussian

    def setup(self):
        self.num_tasks = int(self.model_config["num_tasks"])
        self.cfg = sac_config(self.model_config)
        obs_dim = self.observation_space.shape[0] - self.num_tasks
        options = network_options(self.cfg)
        self.pi = TaskNetwork(1, obs_dim, 2 * self.action_space.shape[0], self.num_tasks, **options)
        if not self.inference_only:
            self.vf = TaskNetwork(1, obs_dim, 1, self.num_tasks, **options)

    def _forward(self, batch, **kwargs):
        obs, task = self.split(batch[Columns.OBS])
        mean, log_std = self.pi(obs, task)[0].chunk(2, dim=-1)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mean, log_std], dim=-1)}

    def compute_values(self, batch, embeddings=None):
        obs, task = self.split(batch[Columns.OBS])
        return self.vf(obs, task)[0].squeeze(-1)

    def get_non_inference_attributes(self):
        return ["vf"]
