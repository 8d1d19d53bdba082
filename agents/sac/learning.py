"""The SAC learner: state (networks, optimizers, temperatures) and one update step.

The update reads like the paper (Haarnoja et al. 2018, with per-task temperatures as in
multi-task SAC, Yu et al. 2019); names follow CleanRL's sac_continuous_action.py. Every loss is
computed per task (`TaskLosses`, from the task-balanced batch) and turned into a gradient by the
network's balancer (agents/balancers: the mean by default); learner hooks and the synchronizer
plug in at the points agents/hooks.py lists.

Update order (`sac.update_order`):
  sequential    critic step, then the actor's loss against the updated critic, then the
                temperatures (CleanRL, Stable-Baselines3);
  simultaneous  critic, actor and temperature gradients all from the networks as they were at
                the start of the update, then every step (Spinning Up, Continual World).

Stabilizers (Kurin et al. 2022's, all off by default): `sac.actor_weight_decay` (Adam's L2 term
on the actor), `sac.shared_temperature` (one temperature for every task), and per-task reward
normalisation when replay samples (agents/replay.py). Also off by default, and not Kurin et al.'s
(their code clips no gradient): `sac.max_grad_norm`, the critic's and the actor's gradient norm
clipped just before its step (the temperature's is not clipped).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import torch

from agents.balancers import BalanceConfig, TaskLosses, make_balancers
from agents.balancers.jacobian import LinearRecorder
from agents.hooks import LearnerHook, Synchronizer
from agents.networks import build_actor_and_critic
from agents.replay import Batch
from agents.sac.compiled import compile_passes
from agents.sac.config import SACConfig
from agents.sac.lr_schedule import lr_factor


def last_shared_matrix(module) -> torch.Tensor | None:
    """GradNorm's W: the network's last shared weight matrix (biases are [K, 1, out]: skipped)."""
    matrices = [p for name, p in module.named_shared_parameters()
                if name.endswith("weight") and p.dim() >= 2 and min(p.shape[-2:]) > 1]
    return matrices[-1] if matrices else None


class SACLearner:
    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, num_tasks: int,
                 device: torch.device, synchronizer: Synchronizer | None = None,
                 balance: BalanceConfig | None = None, seed: int = 0):
        self.cfg, self.device = cfg, device
        self.synchronizer = synchronizer or Synchronizer()
        actor, critic = build_actor_and_critic(cfg, obs_dim, action_dim, num_tasks)
        self.actor, self.critic = actor.to(device), critic.to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        temperatures = 1 if cfg.shared_temperature else num_tasks
        self.log_alpha = torch.full((temperatures,), float(cfg.init_alpha), device=device).log()
        self.log_alpha.requires_grad_(True)
        self.target_entropy = (-float(action_dim) if cfg.target_entropy is None
                               else float(cfg.target_entropy))
        # fused: one kernel per optimizer step (on CPU, Adam's default is a per-tensor loop).
        self.actor_optimizer = torch.optim.Adam(self.actor.own_parameters(), lr=cfg.actor_lr, fused=True,
                                                weight_decay=cfg.actor_weight_decay)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, fused=True)
        # What each optimizer trains: its network's parameters, and its hooks' own.
        self.params = {"actor": self.actor.own_parameters(), "critic": list(self.critic.parameters()),
                       "alpha": [self.log_alpha]}
        self.optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer,
                           "alpha": self.alpha_optimizer}
        self.balancers = make_balancers(balance or BalanceConfig(), num_tasks, seed, device,
                                        {"actor": last_shared_matrix(self.actor),
                                         "critic": last_shared_matrix(self.critic)},
                                        shared_temperature=cfg.shared_temperature)
        # A gradient combiner reads each task's gradient: record the linear layers' inputs and
        # outputs of the losses' forward passes (agents/balancers/jacobian.py).
        self.record = {net: b.per_task_gradients for net, b in self.balancers.items()}
        self.recorder = LinearRecorder(self.actor, self.critic) if any(self.record.values()) else None
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        # The Polyak groups (rate, targets, online): a shared encoder at sac.encoder_tau if set (mtrl's
        # encoder_tau), everything else at sac.tau.
        self._polyak = [(cfg.tau, self._target_params, self._critic_params)]
        if self.critic.encoder is not None and cfg.encoder_tau:
            encoder = {id(p) for p in self.critic.encoder.parameters()}
            pairs = list(zip(self._target_params, self._critic_params))
            self._polyak = [(rate, [q for q, p in pairs if (id(p) in encoder) == own],
                             [p for q, p in pairs if (id(p) in encoder) == own])
                            for rate, own in ((cfg.tau, False), (cfg.encoder_tau, True))]
        self.hook_tensors: dict[str, dict[str, torch.Tensor]] = {"actor": {}, "critic": {}}  # add_hook_parameters
        self.num_updates = 0
        self.schedule_updates = cfg.lr_schedule_updates  # the trainer sets the run's planned updates if 0
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)  # every loss so far was finite
        self._finite_copy = torch.ones((), dtype=torch.bool, pin_memory=device.type == "cuda")  # its host copy
        self.critic_pass, self.actor_pass = compile_passes(self, cfg.compile)  # eager unless sac.compile

    def _add_param_groups(self, own: dict[str, list]) -> None:
        for network, params in own.items():
            if params:
                self.optimizers[network].add_param_group({"params": params})
                self.params[network] += params

    def add_hook_parameters(self, hooks: Sequence[LearnerHook]) -> None:
        """Give the hooks' own parameters a param group in their network's optimizer, and keep
        what the hooks' tensors ranks must agree on (`synced_tensors`) beside the networks'."""
        self._add_param_groups({net: [p for hook in hooks for p in hook.parameters(net)]
                                for net in ("actor", "critic")})
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

    def alpha(self, task: torch.Tensor) -> torch.Tensor:
        """The temperature log-parameters of each row's task (one shared, with sac.shared_temperature)."""
        return self.log_alpha[torch.zeros_like(task) if self.cfg.shared_temperature else task]

    # -- losses (per task) --------------------------------------------------------------------
    # `_critic_pass` and `_actor_pass` hold every network evaluation of an update: pure functions
    # of tensors, the parts `sac.compile` compiles (agents/sac/compiled.py).
    def _critic_pass(self, obs, action, reward, next_obs, terminated, task):
        """(Q1, Q2 [B], the soft Bellman target y [B], the critic trunk's features)."""
        alpha = self.alpha(task).detach().exp()
        with torch.no_grad():
            next_action, next_log_pi = self.actor.sample(next_obs, task)
            qf_next_target = self.critic_target(next_obs, next_action, task)
            min_qf_next_target = qf_next_target.min(dim=0).values - alpha * next_log_pi
            next_q_value = reward + (1.0 - terminated) * self.cfg.gamma * min_qf_next_target
        (qf1_a_values, qf2_a_values), features = self.critic(obs, action, task, with_features=True)
        return qf1_a_values, qf2_a_values, next_q_value, features

    def _actor_pass(self, obs, task):
        """(alpha * log pi(a|s) - min_j Q_j(s, a) [B] with a ~ pi(.|s), log pi [B], the actor
        trunk's features)."""
        pi, log_pi, features = self.actor.sample(obs, task, with_features=True)
        min_qf_pi = self.critic(obs, pi, task).min(dim=0).values
        return self.alpha(task).detach().exp() * log_pi - min_qf_pi, log_pi, features

    def critic_loss(self, batch: Batch) -> tuple[TaskLosses, torch.Tensor, dict]:
        """Regress both Q's onto the soft Bellman target
            y = r + gamma * (1 - d) * (min_j Q'_j(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s').
        Returns the per-task losses, the critic trunk's features and logging values."""
        obs, action, reward, next_obs, terminated, task = batch
        with self._recording("critic") as calls:
            qf1_a_values, qf2_a_values, next_q_value, features = self.critic_pass(*batch)

        def recompute():  # the same batch and target through the (updated) critic: FAMO's second pass
            q = self.critic(obs, action, task)
            return TaskLosses([(q[0] - next_q_value) ** 2, (q[1] - next_q_value) ** 2], task).per_task()
        losses = TaskLosses([(qf1_a_values - next_q_value) ** 2, (qf2_a_values - next_q_value) ** 2], task, recompute,
                            calls)
        return losses, features, {"q/mean": qf1_a_values.detach().mean()}

    def actor_loss(self, batch: Batch) -> tuple[TaskLosses, torch.Tensor, torch.Tensor]:
        """E[alpha * log pi(a|s) - min_j Q_j(s, a)],  a ~ pi(.|s) reparameterised; per task, with
        the actor trunk's features and log pi."""
        obs, task = batch.obs, batch.task
        draws = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        with self._recording("actor") as calls:
            loss, log_pi, features = self.actor_pass(obs, task)

        def recompute():  # the same draws through the (updated) actor: FAMO's second pass
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.set_rng_state(draws[0])
                if draws[1] is not None:
                    torch.cuda.set_rng_state_all(draws[1])
                return TaskLosses([self._actor_pass(obs, task)[0]], task).per_task()
        return TaskLosses([loss], task, recompute, calls), features, log_pi

    def temperature_loss(self, log_pi: torch.Tensor, task: torch.Tensor) -> TaskLosses:
        """Each task's temperature keeps its policy's entropy near the target:
        E[-log alpha_task * (log pi + target entropy)]."""
        def loss():
            return -self.alpha(task) * (log_pi.detach() + self.target_entropy)
        return TaskLosses([loss()], task, lambda: TaskLosses([loss()], task).per_task())

    def _recording(self, network: str):
        """Record the linear layers this block runs through, if the network's balancer needs it."""
        return self.recorder.recording() if self.record[network] else contextlib.nullcontext([])

    # -- one update ---------------------------------------------------------------------------
    def _gradients(self, network: str, losses: TaskLosses, terms: dict, hooks: Sequence[LearnerHook]) -> None:
        """The network's .grad: the balanced task losses' gradient, then the loss terms', synced."""
        params = self.params[network]
        self.optimizers[network].zero_grad(set_to_none=True)
        self.balancers[network].backward(losses, params, network, retain_graph=bool(terms),
                                         gather=self.synchronizer.gather_rows)
        for hook in hooks:
            hook.observe_gradients(network)
        if terms:
            sum(terms.values()).backward(inputs=[p for p in params if p.requires_grad])
        self.synchronizer.after_backward(params)

    def _step(self, networks: tuple[str, ...], hooks: Sequence[LearnerHook], losses: dict) -> None:
        for hook in hooks:
            hook.before_step(networks)
        for network in networks:
            if self.cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params[network], self.cfg.max_grad_norm)
            self.optimizers[network].step()
        for hook in hooks:
            hook.after_step(networks)
        for network in networks:
            self.balancers[network].after_step(network, losses[network])

    @staticmethod
    def _terms(network: str, batch: Batch, features: torch.Tensor, hooks: Sequence[LearnerHook]) -> dict:
        """Every hook's loss terms for `network`, {name: value} (logged as loss/<name>); terms of one
        name from several hooks add up."""
        terms: dict[str, torch.Tensor] = {}
        for hook in hooks:
            for name, value in hook.loss_terms(network, batch, features).items():
                terms[name] = terms[name] + value if name in terms else value
        return terms

    def update(self, batch: Batch, hooks: Sequence[LearnerHook] = ()) -> dict[str, torch.Tensor]:
        """One gradient step on critics, actor and temperatures. Returns detached loss tensors."""
        batch = Batch(*(x.to(self.device, non_blocking=True) for x in batch))
        self._set_learning_rates()
        losses = {}
        losses["critic"], critic_features, info = self.critic_loss(batch)
        critic_terms = self._terms("critic", batch, critic_features, hooks)
        if self.cfg.update_order == "simultaneous":
            losses["actor"], actor_features, log_pi = self.actor_loss(batch)
            actor_terms = self._terms("actor", batch, actor_features, hooks)
            self._gradients("critic", losses["critic"], critic_terms, hooks)
            self._gradients("actor", losses["actor"], actor_terms, hooks)
            self._step(("critic", "actor"), hooks, losses)
        else:
            self._gradients("critic", losses["critic"], critic_terms, hooks)
            self._step(("critic",), hooks, losses)
            losses["actor"], actor_features, log_pi = self.actor_loss(batch)
            actor_terms = self._terms("actor", batch, actor_features, hooks)
            self._gradients("actor", losses["actor"], actor_terms, hooks)
            self._step(("actor",), hooks, losses)

        losses["alpha"] = self.temperature_loss(log_pi, batch.task)
        self._gradients("alpha", losses["alpha"], {}, ())
        self.alpha_optimizer.step()
        self.balancers["alpha"].after_step("alpha", losses["alpha"])

        # Target critics track the critics: theta' <- (1 - tau) theta' + tau theta (the encoder at encoder_tau)
        with torch.no_grad():
            for tau, targets, online in self._polyak:
                torch._foreach_lerp_(targets, online, tau)
            means = torch.stack([losses[net].mean() for net in ("critic", "actor", "alpha")]).detach()
            # No host sync here: the flag is read when the trainer checks for divergence.
            self.all_finite &= torch.isfinite(means).all()
        self.num_updates += 1
        self.synchronizer.after_update(self)
        qf1, qf2 = (term.detach().mean() for term in losses["critic"].terms)
        out = {"loss/qf1": qf1, "loss/qf2": qf2, **info, "loss/actor": means[1], "loss/alpha": means[2],
               "policy/entropy": -log_pi.detach().mean()}
        return {**out, **{f"loss/{name}": value.detach() for name, value in {**critic_terms, **actor_terms}.items()}}

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
