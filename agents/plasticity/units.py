"""Plasticity remedies on units: ReDo and continual backprop, each a learner hook (agents/plasticity/remedies.py
says what a remedy may touch: shared weights only, never frozen ones; EWC anchors are kept).

The units: every hidden layer of the MLP trunks of the treated networks (each ensemble member its
own: the twin critics are two networks). A unit's incoming weights are its column of the layer's
weight [K, in, out] and its bias; its outgoing weights are its row of the next layer's weight (the
next hidden layer, or a shared output layer). The last hidden layer's units are not treated when
the head is per task (their outgoing weights belong to each task: earlier tasks' heads stay untouched).

    redo   ReDo (Sokar et al. 2023; google/dopamine labs/redo weight_recyclers.py): every `redo_every`
           updates, after the step, score the units on a fresh probe batch of `probe_rows` from replay
           (score = mean |activation| / its layer's mean; dormant: score <= tau), then for each dormant
           unit: incoming weights re-drawn, its bias 0, outgoing weights 0, and the Adam moments of the
           incoming and outgoing weights zeroed (not the biases', as theirs). The target critic is not
           touched (theirs: reset_target_models=False; Polyak averaging carries the change over).
           Deviation: incoming weights are drawn from the network's own initialisation (nn.Linear's),
           theirs from Xavier-uniform whatever the network's initialisation.
    cbp    continual backprop (Dohare et al. 2024; shibhansh/loss-of-plasticity lop/algos/gnt.py,
           "contribution" utility) after every update, per layer:
               age += 1;  f = d f + (1 - d) mean_batch h;  u = d u + (1 - d) mean_out |W_next| mean_batch |h|
               eligible: age > maturity;  n = rate x |eligible| (if n < 1: 1 with probability n)
               replace the n eligible units of lowest u / (1 - d^age): incoming weights ~ U(+-sqrt(3 / fan_in))
               (their RL runs' 'lecun'), bias 0, outgoing 0, u = f = age = 0, Adam moments of those
               entries zeroed (their AdamGnT's; their PPO runs use plain Adam and reset none).
           Their next-layer bias correction adds f_hat x W_next to the next bias after f was zeroed: a
           no-op, left out. Deviations: the activations come from one extra forward pass of the
           update's batch through the stepped networks (theirs: the step's own forward pass);
           fused Adam keeps one step count per tensor (AdamGnT: per element), so it is not reset.
"""

from __future__ import annotations

import torch

from agents import seeding
from agents.heads import SingleHead
from agents.networks import TaskNetwork
from agents.plasticity.diagnostics import probe, unit_scores
from agents.plasticity.remedies import Remedy
from agents.trunks import MLPTrunk


def unit_layers(network) -> list[tuple[object, object | None]]:
    """(layer, next layer or None) for each hidden layer of the network's MLP trunks, in forward order;
    None: the next is a per-task head (the layer's units are not treated)."""
    out = []
    for module in network.modules():
        if isinstance(module, TaskNetwork) and isinstance(module.trunk, MLPTrunk):
            layers = list(module.trunk.layers)
            head = module.head.linear if isinstance(module.head, SingleHead) else None
            out += list(zip(layers, [*layers[1:], head]))
    return out


class UnitRemedy(Remedy):
    """The part ReDo and CBP share: recording the treated networks' activations on a batch, and
    re-initialising units."""

    def activations(self, batch) -> dict[str, list[torch.Tensor]]:
        """{network: [K, rows, H] per hidden layer}: `batch` through the networks' loss passes, sampled
        actions from the remedy's own stream."""
        return probe(self.learner, batch, self.probe_rng)[0]

    def names(self, network: str) -> dict[int, str]:
        return {id(p): n for n, p in getattr(self.learner, network).named_parameters()}

    @torch.no_grad()
    def renew(self, network: str, layer, following, units: torch.Tensor, incoming: torch.Tensor) -> None:
        """Units [K, H] (bool) of `layer` get `incoming` [K, in, H] weights where set, bias 0, outgoing
        weights 0 and zeroed Adam moments of those weights (and, `bias_moments`, of the biases)."""
        mask_in = units[:, None, :].expand_as(layer.weight)
        layer.weight.copy_(torch.where(mask_in, incoming, layer.weight))
        layer.bias.masked_fill_(units[:, None, :], 0.0)
        mask_out = units[:, :, None].expand_as(following.weight)
        following.weight.masked_fill_(mask_out, 0.0)
        state = self.learner.optimizers[network].state
        touched = [(layer.weight, mask_in), (following.weight, mask_out)]
        if self.bias_moments:
            touched.append((layer.bias, units[:, None, :]))
        for param, mask in touched:
            for key in ("exp_avg", "exp_avg_sq"):
                if param in state and key in state[param]:
                    state[param][key].masked_fill_(mask, 0.0)


class ReDo(UnitRemedy):
    bias_moments = False  # theirs resets the kernels' moments only

    def __init__(self, *args, tau: float, every: int, sample, seed: int):
        """sample(rng): a fresh probe batch from replay."""
        super().__init__(*args)
        self.tau, self.every, self.sample = tau, every, sample
        self.rng = self.probe_rng = seeding.rng(seed, "plasticity-probe", 1)  # its probe batches' draws
        self.recycled = 0  # units recycled so far (logged)

    def after_step(self, networks):
        if "actor" not in networks or (self.learner.num_updates + 1) % self.every:
            return
        acts = self.activations(self.sample(self.rng))
        fresh = self.fresh.draw()
        for net in self.networks:
            names = self.names(net)
            for (layer, following), act in zip(unit_layers(getattr(self.learner, net)), acts[net], strict=True):
                dormant = unit_scores(act) <= self.tau  # [K, H]
                if following is None or not dormant.any():
                    continue
                self.renew(net, layer, following, dormant, fresh[net][names[id(layer.weight)]])
                self.recycled += int(dormant.sum())
        self.strategy.restore_frozen()

    def counts(self):
        return {"redo/recycled": self.recycled}

    def state_dict(self):
        return {"recycled": self.recycled, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.recycled, self.rng.bit_generator.state = state["recycled"], state["rng"]


class ContinualBackprop(UnitRemedy):
    bias_moments = True  # AdamGnT resets the bias's too

    def __init__(self, *args, rate: float, maturity: int, decay: float, seed: int):
        super().__init__(*args)
        self.rate, self.maturity, self.decay = rate, maturity, decay
        self.rng = seeding.rng(seed, "cbp")  # the stochastic rounding's draws
        self.probe_rng = seeding.rng(seed, "cbp", 2)  # the actions its forward pass samples
        self.generator = torch.Generator().manual_seed(seeding.seed_for(seed, "cbp", 1))
        self.state = {net: [self._zeros(layer) for layer, _ in unit_layers(getattr(self.learner, net))]
                      for net in self.networks}
        self.batch = None
        self.replaced = 0

    @staticmethod
    def _zeros(layer) -> dict[str, torch.Tensor]:
        k, _, h = layer.weight.shape
        return {name: torch.zeros(k, h, device=layer.weight.device) for name in ("age", "mean", "utility")}

    def loss_terms(self, network, batch, features):
        if network == "critic":
            self.batch = batch  # this update's batch, read after its step
        return {}

    @torch.no_grad()
    def after_step(self, networks):
        if "actor" not in networks or self.batch is None:
            return
        acts, d = self.activations(self.batch), self.decay
        for net in self.networks:
            for (layer, following), act, s in zip(unit_layers(getattr(self.learner, net)), acts[net],
                                                   self.state[net], strict=True):
                if following is None:
                    continue
                act = act.float()
                s["age"] += 1
                s["mean"].mul_(d).add_(act.mean(dim=1), alpha=1 - d)
                contribution = following.weight.abs().mean(dim=-1) * act.abs().mean(dim=1)  # [K, H]
                s["utility"].mul_(d).add_(contribution, alpha=1 - d)
                units = self._choose(s)
                if units.any():
                    fan_in = layer.weight.shape[1]
                    bound = (3.0 / fan_in) ** 0.5
                    incoming = (torch.rand(layer.weight.shape, generator=self.generator) * 2 - 1) * bound
                    self.renew(net, layer, following, units, incoming.to(layer.weight.device))
                    for key in ("age", "mean", "utility"):
                        s[key].masked_fill_(units, 0.0)
                    self.replaced += int(units.sum())
        self.strategy.restore_frozen()

    def _choose(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """[K, H] bool: each member's units to replace this update."""
        chosen = torch.zeros_like(s["age"], dtype=torch.bool)
        corrected = s["utility"] / (1 - self.decay ** s["age"]).clamp(min=1e-12)
        for k in range(len(chosen)):
            eligible = torch.nonzero(s["age"][k] > self.maturity).flatten()
            if not len(eligible):  # theirs: no draw either
                continue
            n = self.rate * len(eligible)
            n = (1 if self.rng.random() <= n else 0) if n < 1 else int(n)  # theirs: stochastic rounding
            if n:
                chosen[k, eligible[torch.topk(-corrected[k, eligible], n).indices]] = True
        return chosen

    def counts(self):
        return {"cbp/replaced": self.replaced}

    def state_dict(self):
        return {"state": self.state, "rng": self.rng.bit_generator.state,
                "probe_rng": self.probe_rng.bit_generator.state,
                "generator": self.generator.get_state(), "replaced": self.replaced}

    def load_state_dict(self, state):
        self.state = state["state"]
        self.rng.bit_generator.state, self.probe_rng.bit_generator.state = state["rng"], state["probe_rng"]
        self.generator.set_state(state["generator"].cpu())  # a CPU generator (to_device may have moved it)
        self.replaced = state["replaced"]
