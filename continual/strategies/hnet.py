"""Hypernetwork output regularizer (von Oswald et al. 2020) for generated weights
(sac.head=hyper and/or sac.trunk=hyper):

    L = L_task + beta / (T - 1) * sum_{t < T} || f_h(e_t, Theta) - f_h(e_t, Theta*) ||^2

f_h(e_t, .) is what the network's hypernetworks generate for earlier task t (the head's output
layer, the trunk's layers; weights and biases, theta_0 included), Theta* the weights at the end
of task t's stage (the generated weights are stored then), and e_t t's embedding, fixed once its
stage is over (detached here). beta = 0.01 as in the reference code. The look-ahead term of the
paper (Theta + Delta Theta) is left out: its simpler form, used here, is the one the paper
reports as also working. Only generated weights are protected: with a generated head over an
ordinary trunk the trunk can still drift, so the whole policy is protected only with both
sac.trunk=hyper and sac.head=hyper (von Oswald's setting; the trunk and the head then have a
hypernetwork each, where von Oswald's has one for all layers).
"""

from __future__ import annotations

import torch

from continual.strategies.base import Strategy, TaskContext


class HypernetRegularizer(Strategy):
    default_coef = 0.01

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.targets: dict[str, dict[int, torch.Tensor]] = {net: {} for net in self.networks}  # f_h(e_t, Theta*)

    def generators(self, network: str) -> list:
        """The network's hypernetworks (agents/layers.py: Hypernetwork): its trunk's and its head's."""
        net = self.networks[network].net
        return [part.generator for part in (net.trunk, net.head) if hasattr(part, "generator")]

    def generated(self, network: str, tasks: list[int]) -> torch.Tensor:
        """f_h(e_t) for the given tasks, flattened per task: [len(tasks), n_generated]."""
        return torch.cat([x.flatten(1) for hyper in self.generators(network)
                          for layer in hyper.generate(hyper.embedding[tasks].detach()) for x in layer], dim=1)

    @torch.no_grad()
    def end_task(self, ctx: TaskContext) -> None:
        for net in self.networks:
            for task, row in zip(ctx.tasks, self.generated(net, list(ctx.tasks))):
                self.targets[net][task] = row.clone()

    def penalty(self, network: str):
        if network not in self.networks or not self.targets[network]:
            return 0.0
        tasks = sorted(self.targets[network])
        target = torch.stack([self.targets[network][t] for t in tasks])
        return self.coef(self.default_coef) * (self.generated(network, tasks) - target).pow(2).sum() / len(tasks)

    def state_dict(self) -> dict:
        return {"targets": {net: {str(t): v for t, v in d.items()} for net, d in self.targets.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.targets = {net: {int(t): v for t, v in d.items()} for net, d in state["targets"].items()}
