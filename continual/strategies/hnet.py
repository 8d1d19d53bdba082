"""Hypernetwork output regularizer (von Oswald et al. 2020; Ehret et al. 2021 for recurrent
networks) for generated weights (sac.head=hyper and/or sac.trunk=hyper; with sac.memory, the
memory's weights too, agents/hyper_memory.py):

    L = L_task + beta / (T - 1) * sum_{t < T} || f_h(e_t, Theta) - f_h(e_t, Theta*) ||^2

f_h(e_t, .) is what the network's hypernetworks (agents/hypernets.py, any `sac.hypernet`: mlp,
chunked, rnn) generate for earlier task t (the memory's embeddings, recurrent maps and read-out,
the trunk's layers, the head's output layer; weights and biases, theta_0 included), Theta* the
weights at the end of task t's stage (the generated weights are stored then), and e_t t's
embedding, fixed once its stage is over (detached here, and restored after every step, so that
neither momentum nor weight decay moves it). beta = 0.01 as in von Oswald's reference
code (Ehret et al.'s default 0.005). The look-ahead term of the paper (Theta + Delta Theta) is left
out: its simpler form, used here, is the one the paper reports as also working, and Ehret et al.'s
code never uses it either. Only generated weights are protected: with a generated head over an
ordinary trunk the trunk can still drift, so the whole policy is protected only with both
sac.trunk=hyper and sac.head=hyper (von Oswald's setting; each part then has a hypernetwork of its
own, where von Oswald's and Ehret's have one for all layers).

Compared with Ehret et al.'s code (cl_in_rnns, utils/hnet_regularizer.py calc_fix_target_reg):
the same sum over every earlier task divided by their number (their `hnet_reg_batch_size`, a random
subset of earlier tasks per step, is not offered); their targets are computed when the next task
starts, ours when a task ends (the same weights); their old task embeddings stay trainable through
the regulariser, ours enter it as constants; their code's Fisher-weighted form,
sum F * (W_target - W)^2 (`fisher_estimates`), is never given a Fisher there (only 0/1 masks,
for an analysis); `continual.hnet_fisher` computes one: at a
task's end, the diagonal Fisher of the network's outputs with respect to that task's generated
weights, as EWC's (continual/strategies/importance.py: the Gaussian policy's Fisher for the actor,
sum_j (dQ_j)^2 for the critic; over `continual.importance_samples` stored states or windows' steps),
and each task's term becomes sum F_t * (f_h(e_t) - theta*_t)^2.

`sac.hyper_growth` (sac.hypernet=rnn): the hypernetworks grow when each task starts
(agents/hypernets.py, Chandra et al.'s network growth).
"""
from __future__ import annotations

import torch
from torch.func import jacrev

from agents.hypernets import Hypernetwork
from continual.strategies import importance
from continual.strategies.base import Strategy, TaskContext, importance_states
from continual.strategies.importance import FISHER_FLOOR, States


class HypernetRegularizer(Strategy):
    needs_task_ids = True  # per-task memories / embeddings, read by task id
    default_coef = 0.01

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets: dict[str, dict[int, torch.Tensor]] = {net: {} for net in self.networks}  # f_h(e_t, Theta*)
        self.fisher: dict[str, dict[int, torch.Tensor]] = {net: {} for net in self.networks}  # hnet_fisher: F_t
        self.embeddings: dict[str, dict[int, torch.Tensor]] = {}  # "network.i" -> finished tasks' e_t, kept fixed

    def generators(self, network: str) -> list:
        """The network's hypernetworks (agents/hypernets.py): its trunk's, its head's, its memory's."""
        return [m for m in self.networks[network].modules() if isinstance(m, Hypernetwork)]

    def generated(self, network: str, tasks: list[int]) -> torch.Tensor:
        """f_h(e_t) for the given tasks, flattened per task: [len(tasks), n_generated]."""
        return torch.cat([x.flatten(1) for hyper in self.generators(network)
                          for layer in hyper.generate(tasks, detach_embedding=True) for x in layer], dim=1)

    def _every_generator(self) -> dict[str, list]:
        """Every hypernetwork of the learner's actor and critic, regularized or not, by "network.i"."""
        return {f"{net}.{i}": hyper for net in ("actor", "critic") for i, hyper in
                enumerate(m for m in getattr(self.learner, net).modules() if isinstance(m, Hypernetwork))}

    def start_task(self, ctx: TaskContext) -> None:
        """sac.hyper_growth: every hypernetwork (the target critic's too) grows for the stage's tasks
        (agents/hypernets.py); on a resume only the freezing is applied again (requires_grad is not
        checkpointed)."""
        for module in (self.learner.actor, self.learner.critic, self.learner.critic_target):
            for hyper in (m for m in module.modules() if isinstance(m, Hypernetwork)):
                hyper.grow(ctx.tasks, ctx.earlier, copy=not ctx.resumed)

    def after_step(self, networks) -> None:
        """A finished task's embedding stays as it was at its end, whatever the optimizer's momentum or
        weight decay would do to it (its rows get no gradient of their own after the stage)."""
        generators = self._every_generator()
        with torch.no_grad():
            for key, rows in self.embeddings.items():
                if key.split(".")[0] in networks:
                    for task, row in rows.items():
                        generators[key].embedding[task] = row

    def end_task(self, ctx: TaskContext) -> None:
        for key, hyper in self._every_generator().items():
            self.embeddings.setdefault(key, {}).update({t: hyper.embedding[t].detach().clone() for t in ctx.tasks})
        for net in self.networks:
            with torch.no_grad():
                for task, row in zip(ctx.tasks, self.generated(net, list(ctx.tasks))):
                    self.targets[net][task] = row.clone()
            if self.cfg.hnet_fisher:
                for task in ctx.tasks:
                    states = importance_states(ctx.replay, (task,), self.cfg.importance_samples, ctx.rng,
                                               self.learner.device)
                    self.fisher[net][task] = self.generated_fisher(net, task, states)

    def generated_fisher(self, network: str, task: int, states: States) -> torch.Tensor:
        """[n_generated]: the diagonal Fisher of the network's outputs with respect to `task`'s
        generated weights (in generated()'s layout), mean over the real steps of `states`, one
        sample at a time (the generated weights enter as substitutes: agents/hypernets.py)."""
        module, hypers = self.networks[network], self.generators(network)
        with torch.no_grad():
            given = [x[0].clone() for hyper in hypers for layer in hyper.generate([task]) for x in layer]
        counts = [2 * len(hyper.sizes) for hyper in hypers]

        def outputs(*tensors):  # the network's per-step outputs with these generated weights (jacrev's aux: the std)
            at = 0
            for hyper, count in zip(hypers, counts):
                part = tensors[at:at + count]
                hyper.substitute = (task, list(zip(part[0::2], part[1::2])))
                at += count
            try:
                out = module(*sample)
            finally:
                for hyper in hypers:
                    hyper.substitute = None
            if network == "actor":
                return importance.policy_steps(out)
            q = importance.q_steps(out)
            return q, q

        inputs = states.actor if network == "actor" else states.critic
        total = [torch.zeros_like(x) for x in given]
        with torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None):
            for i in range(len(states.mask)):  # one sample at a time (a generated memory cannot be vmapped)
                sample, mask = tuple(x[i:i + 1] for x in inputs), states.mask[i:i + 1]
                jac, aux = jacrev(outputs, argnums=tuple(range(len(given))), has_aux=True)(*given)
                for k in range(len(given)):
                    total[k] += (importance.gaussian_fisher_sum(jac[0][k][None], jac[1][k][None], aux[None], mask)
                                 if network == "actor" else importance.q_fisher_sum(jac[k][None], mask)).detach()
        fisher = torch.cat([t.flatten() for t in total]) / states.mask.sum().clamp_min(1)
        return fisher.clamp_min(FISHER_FLOOR) if network == "actor" else fisher

    def penalty(self, network: str):
        if network not in self.networks or not self.targets[network]:
            return 0.0
        tasks = sorted(self.targets[network])
        target = torch.stack([self.targets[network][t] for t in tasks])
        squares = (self.generated(network, tasks) - target).pow(2)
        if self.cfg.hnet_fisher:
            squares = squares * torch.stack([self.fisher[network][t] for t in tasks])
        return self.coef(self.default_coef) * squares.sum() / len(tasks)

    def state_dict(self) -> dict:
        return {key: {net: {str(t): v for t, v in d.items()} for net, d in getattr(self, key).items()}
                for key in ("targets", "fisher", "embeddings")}

    def load_state_dict(self, state: dict) -> None:
        for key in ("targets", "fisher", "embeddings"):
            setattr(self, key, {net: {int(t): v for t, v in d.items()} for net, d in state[key].items()})
