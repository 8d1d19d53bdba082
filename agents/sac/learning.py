"""The SAC learner: networks, optimizers, temperatures and one update step (its bookkeeping:
hooks' parameters, ranks' tensors, learning rates, divergence checks, checkpoints: agents/sac/state.py).

The losses are SAC's (Haarnoja et al. 2018, with per-task temperatures as in multi-task SAC, Yu et
al. 2019), named as CleanRL's sac_continuous_action.py, and pure functions of (networks, batch,
temperatures): `critic_pass` and `actor_pass` hold every network evaluation, each loss is the line
after its pass, and the temperatures' is in agents/sac/temperature.py. Their plain version, the
networks written out layer by layer as the paper writes SAC, is in tests/test_sac.py ("the SAC
losses against a plain implementation"), which checks these losses against it and checks that each
classic mistake (max for min, the entropy's sign, no gamma, bootstrapping terminal states) moves them.

Around the losses, not inside them: `sac.compile` (the losses run the passes as `self.passes`:
agents/sac/compiled.py); each loss per task (`TaskLosses`, from the task-balanced batch), prepared
for its network's balancer (agents/balancers/prepare.py: recorded, re-computable, as that balancer
needs) and turned into a gradient by it (agents/balancers: the mean by default); learner hooks and
the synchronizer at the points agents/hooks.py lists (`_terms`, `_gradients`, `_train`).

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

import copy
from collections.abc import Sequence

import torch

from agents.balancers import BalanceConfig, TaskLosses, make_balancers
from agents.balancers.prepare import LossPreparer
from agents.hooks import LearnerHook, Synchronizer
from agents.models import build_actor_and_critic
from agents.replay import Batch
from agents.sac.compiled import compile_passes
from agents.sac.config import SACConfig
from agents.sac.precision import autocast, resolve_precision, subnormals_flushed, use_tf32
from agents.sac.state import LearnerState
from agents.sac.temperature import Temperature


def last_shared_matrix(module) -> torch.Tensor | None:
    """GradNorm's W: the network's last shared weight matrix (biases are [K, 1, out]: skipped)."""
    matrices = [p for name, p in module.named_shared_parameters()
                if name.endswith("weight") and p.dim() >= 2 and min(p.shape[-2:]) > 1]
    return matrices[-1] if matrices else None


def polyak_groups(critic, critic_target, tau: float, encoder_tau: float) -> list[tuple]:
    """The Polyak groups (rate, targets, online): each target parameter with its critic parameter, a
    shared encoder at `encoder_tau` if set (mtrl's encoder_tau), everything else at `tau`. The lists
    are their own, never the learner's params["critic"], which add_hook_parameters extends with the
    hooks' parameters (which have no target)."""
    targets, online = list(critic_target.parameters()), list(critic.parameters())
    if critic.encoder is None or not encoder_tau:
        return [(tau, targets, online)]
    encoder = {id(p) for p in critic.encoder.parameters()}
    pairs = list(zip(targets, online))
    return [(rate, [q for q, p in pairs if (id(p) in encoder) == own],
             [p for q, p in pairs if (id(p) in encoder) == own]) for rate, own in ((tau, False), (encoder_tau, True))]


class SACLearner(LearnerState):
    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, num_tasks: int,
                 device: torch.device, synchronizer: Synchronizer | None = None,
                 balance: BalanceConfig | None = None, seed: int = 0, planned_updates: int = 0):
        """planned_updates: the run's planned updates, the learning-rate schedule's length unless
        sac.lr_schedule_updates sets one."""
        self.cfg, self.device = cfg, device
        self.precision, self.precision_reason = resolve_precision(cfg.precision, device)  # fp32 | bf16 | tf32, why
        use_tf32(self.precision)
        self.synchronizer = synchronizer or Synchronizer()
        actor, critic = build_actor_and_critic(cfg, obs_dim, action_dim, num_tasks)
        self.actor, self.critic = actor.to(device), critic.to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.temperature = Temperature(cfg, num_tasks, action_dim, device)
        self.log_alpha = self.temperature.log_alphas  # [tasks] ([1] shared): what checkpoints and ranks keep
        # fused: one kernel per optimizer step (on CPU, Adam's default is a per-tensor loop).
        self.actor_optimizer = torch.optim.Adam(self.actor.own_parameters(), lr=cfg.actor_lr, fused=True,
                                                weight_decay=cfg.actor_weight_decay)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        self.alpha_optimizer = self.temperature.optimizer
        # What each optimizer trains: its network's parameters and (add_hook_parameters) its hooks' own;
        # the target critic follows the critic's own parameters only (polyak_groups).
        self.params = {"actor": self.actor.own_parameters(), "critic": list(self.critic.parameters()),
                       "alpha": [self.log_alpha]}
        self.optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer,
                           "alpha": self.alpha_optimizer}
        self.balancers = make_balancers(balance or BalanceConfig(), num_tasks, seed, device,
                                        {"actor": last_shared_matrix(self.actor),
                                         "critic": last_shared_matrix(self.critic)},
                                        shared_temperature=cfg.shared_temperature)
        self.prepare = LossPreparer(self.actor, self.critic, device=device,
                                    record=any(b.per_task_gradients for b in self.balancers.values()))
        self._polyak = polyak_groups(self.critic, self.critic_target, cfg.tau, cfg.encoder_tau)
        self.hook_tensors: dict[str, dict[str, torch.Tensor]] = {"actor": {}, "critic": {}}  # add_hook_parameters
        self.num_updates = 0
        self.schedule_updates = cfg.lr_schedule_updates or planned_updates  # the lr schedule's length
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)  # every loss so far was finite
        self._finite_copy = torch.ones((), dtype=torch.bool, pin_memory=device.type == "cuda")  # its host copy
        self.passes = compile_passes(self, cfg.compile)  # critic_pass, actor_pass; compiled with sac.compile

    def autocast(self):
        """The context every network pass of an update runs in: bf16 autocast with
        sac.precision=bf16, else none (agents/sac/precision.py); the networks' outputs are fp32."""
        return autocast(self.device, self.precision)

    # -- the losses: pure functions of (networks, batch, temperatures) -------------------------------
    # critic_pass and actor_pass hold every network evaluation of an update; the losses run them as
    # self.passes.critic and .actor (compiled with sac.compile: agents/sac/compiled.py), and FAMO's
    # re-computations, without gradients, eagerly.
    def critic_pass(self, obs, action, reward, next_obs, terminated, task):
        """(Q1, Q2 [B], the soft Bellman target y [B], the critic trunk's features)."""
        alpha = self.temperature.log_alpha(task).detach().exp()
        with torch.no_grad():
            with self.autocast():
                next_action, next_log_pi = self.actor.sample(next_obs, task)
                qf_next_target = self.critic_target(next_obs, next_action, task)
            min_qf_next_target = qf_next_target.min(dim=0).values - alpha * next_log_pi
            next_q_value = reward + (1.0 - terminated) * self.cfg.gamma * min_qf_next_target
        with self.autocast():
            (qf1_a_values, qf2_a_values), features = self.critic(obs, action, task, with_features=True)
        return qf1_a_values, qf2_a_values, next_q_value, features

    def actor_pass(self, obs, task):
        """(alpha * log pi(a|s) - min_j Q_j(s, a) [B] with a ~ pi(.|s), log pi [B], the actor
        trunk's features)."""
        with self.autocast():
            pi, log_pi, features = self.actor.sample(obs, task, with_features=True)
            min_qf_pi = self.critic(obs, pi, task).min(dim=0).values
        return self.temperature.log_alpha(task).detach().exp() * log_pi - min_qf_pi, log_pi, features

    # Each loss per task, prepared for its network's balancer (agents/balancers/prepare.py): the pass
    # inside `self.prepare(...)`, then the per-row loss, and `again`, how to compute it once more.
    def critic_loss(self, batch: Batch) -> tuple[TaskLosses, torch.Tensor, dict]:
        """Regress both Q's onto the soft Bellman target
            y = r + gamma * (1 - d) * (min_j Q'_j(s', a') - alpha * log pi(a'|s')),  a' ~ pi(.|s').
        Returns the per-task losses, the critic trunk's features and logging values."""
        with self.prepare(self.balancers["critic"]) as prepared:
            qf1_a_values, qf2_a_values, next_q_value, features = self.passes.critic(*batch)

        def again():  # the same batch and target through the (updated) critic
            with self.autocast():
                q = self.critic(batch.obs, batch.action, batch.task)
            return [(q[0] - next_q_value) ** 2, (q[1] - next_q_value) ** 2]
        losses = prepared.losses([(qf1_a_values - next_q_value) ** 2, (qf2_a_values - next_q_value) ** 2],
                                 batch.task, again)
        return losses, features, {"q/mean": qf1_a_values.detach().mean()}

    def actor_loss(self, batch: Batch) -> tuple[TaskLosses, torch.Tensor, torch.Tensor]:
        """E[alpha * log pi(a|s) - min_j Q_j(s, a)],  a ~ pi(.|s) reparameterised; per task, with
        the actor trunk's features and log pi."""
        obs, task = batch.obs, batch.task
        with self.prepare(self.balancers["actor"], replay_draws=True) as prepared:
            loss, log_pi, features = self.passes.actor(obs, task)
        # again: the same draws (replayed) through the (updated) actor
        return prepared.losses([loss], task, lambda: [self.actor_pass(obs, task)[0]]), features, log_pi

    def temperature_loss(self, log_pi: torch.Tensor, task: torch.Tensor) -> TaskLosses:
        """Each task's temperature keeps its policy's entropy near the target:
        E[-log alpha_task * (log pi + target entropy)] (agents/sac/temperature.py)."""
        with self.prepare(self.balancers["alpha"]) as prepared:
            loss = self.temperature.loss(log_pi, task)
        return prepared.losses([loss], task, lambda: [self.temperature.loss(log_pi, task)])

    @staticmethod
    def entropy(log_pi: torch.Tensor) -> torch.Tensor:
        """The policy's entropy estimate, -E[log pi], over the batch."""
        return -log_pi.detach().mean()

    def probe_passes(self, batch, record) -> torch.Tensor:
        """The critic's, then the actor's loss pass on `batch`, without gradients, each inside
        `record(network)` (the plasticity diagnostics record its activations there). Returns the
        policy's entropy on the batch."""
        batch = type(batch)(*(x.to(self.device) for x in batch))
        with torch.no_grad():
            with record(self.critic):
                self.critic_pass(*batch)
            with record(self.actor):
                log_pi = self.actor_pass(batch.obs, batch.task)[1]
        return -log_pi.mean()

    # -- one update ---------------------------------------------------------------------------------
    @staticmethod
    def _terms(network: str, batch: Batch, features: torch.Tensor, hooks: Sequence[LearnerHook]) -> dict:
        """Every hook's loss terms for `network`, {name: value} (logged as loss/<name>); terms of one
        name from several hooks add up."""
        terms: dict[str, torch.Tensor] = {}
        for hook in hooks:
            for name, value in hook.loss_terms(network, batch, features).items():
                terms[name] = terms[name] + value if name in terms else value
        return terms

    def _gradients(self, network: str, losses: TaskLosses, terms: dict, hooks: Sequence[LearnerHook]) -> None:
        """The network's .grad: the balanced task losses' gradient, then the loss terms', synced."""
        params = [p for p in self.params[network] if p.requires_grad]  # frozen ones (hypernetwork growth) get none
        self.optimizers[network].zero_grad(set_to_none=True)
        self.balancers[network].backward(losses, params, network, retain_graph=bool(terms),
                                         gather=self.synchronizer.gather_rows)
        for hook in hooks:
            hook.observe_gradients(network)
        if terms:
            sum(terms.values()).backward(inputs=params)
        self.synchronizer.after_backward(params)

    def _train(self, networks: tuple[str, ...], losses: dict, terms: dict, hooks: Sequence[LearnerHook]) -> None:
        """One step of `networks` together (agents/hooks.py's points 2-8): each one's gradients,
        the hooks' before_step, the (clipped) optimizer steps, the hooks' after_step, then the
        balancers' own steps."""
        for network in networks:
            self._gradients(network, losses[network], terms[network], hooks)
        for hook in hooks:
            hook.before_step(networks)
        for network in networks:
            if self.cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params[network], self.cfg.max_grad_norm)
            with subnormals_flushed(self.device):  # dead units' Adam moments: agents/sac/precision.py
                self.optimizers[network].step()
        for hook in hooks:
            hook.after_step(networks)
        for network in networks:
            self.balancers[network].after_step(network, losses[network])

    def _train_temperature(self, log_pi: torch.Tensor, task: torch.Tensor) -> TaskLosses:
        """The temperatures' step: their balancer's gradient, synced, and Adam; by design no hook
        and no gradient clipping (agents/sac/temperature.py)."""
        losses = self.temperature_loss(log_pi, task)
        self._gradients("alpha", losses, {}, ())
        self.alpha_optimizer.step()
        self.balancers["alpha"].after_step("alpha", losses)
        return losses

    def update(self, batch: Batch, hooks: Sequence[LearnerHook] = ()) -> dict[str, torch.Tensor]:
        """One gradient step on critics, actor and temperatures, then the target critics. Returns
        detached loss tensors; `critic_rows` keeps each row's critic loss before the step."""
        batch = type(batch)(*(x.to(self.device, non_blocking=True) for x in batch))
        self._set_learning_rates()
        sequential = self.cfg.update_order != "simultaneous"
        losses, terms = {}, {}
        losses["critic"], features, info = self.critic_loss(batch)
        terms["critic"] = self._terms("critic", batch, features, hooks)
        if sequential:  # the critic steps first: the actor's loss sees the updated critic
            self._train(("critic",), losses, terms, hooks)
        losses["actor"], features, log_pi = self.actor_loss(batch)
        terms["actor"] = self._terms("actor", batch, features, hooks)
        self._train(("actor",) if sequential else ("critic", "actor"), losses, terms, hooks)
        losses["alpha"] = self._train_temperature(log_pi, batch.task)

        with torch.no_grad():  # the target critics: theta' <- (1 - tau) theta' + tau theta (encoder: encoder_tau)
            for tau, targets, online in self._polyak:
                torch._foreach_lerp_(targets, online, tau)
            means = torch.stack([losses[net].mean() for net in ("critic", "actor", "alpha")]).detach()
            # No host sync here: the flag is read when the trainer checks for divergence.
            self.all_finite &= torch.isfinite(means).all()
        self.num_updates += 1
        self.synchronizer.after_update(self)
        qf1, qf2 = (term.detach().mean() for term in losses["critic"].terms)
        # each row's critic loss before the step (TF-MAS's hard buffer reads it)
        self.critic_rows = sum(term.detach() for term in losses["critic"].terms) / len(losses["critic"].terms)
        out = {"loss/qf1": qf1, "loss/qf2": qf2, **info, "loss/actor": means[1], "loss/alpha": means[2],
               "policy/entropy": self.entropy(log_pi)}
        return {**out, **{f"loss/{name}": value.detach() for name, value in (terms["critic"] | terms["actor"]).items()}}
