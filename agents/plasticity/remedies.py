"""Plasticity remedies on parameters (units: agents/plasticity/units.py), each a learner hook.

What a remedy treats: the *shared* parameters (`named_shared_parameters()`: the trunk, a shared
head) of the networks in `plasticity.networks` that are trainable (a hypernetwork's frozen per-task
parts, sac.hyper_growth, are not). Per-task heads and task embeddings are each task's own and never
touched, so earlier tasks' heads stay as they were. After changing weights a remedy
calls the strategy's `restore_frozen()`: weights a strategy froze (PackNet's) come back bit for bit.
An EWC (L2, MAS, SI) anchor is kept as it is: a changed weight is pulled back toward its anchor in
proportion to its importance (a dormant unit's weights have importance ~0: their gradient is 0).

    l2_init         lambda ||theta - theta_0||^2 added to the loss, theta_0 the run's initial weights
                    (Kumar et al. 2023; skumar9876/L2_Init agents.py: l2_weight * 0.5 * sum, i.e.
                    their l2_weight = 2 lambda; all parameters but LayerNorms', as theirs)
    parseval        lambda (64 / width)^2 sum_l ||W_l W_l^T - s I||_F^2 over the hidden layers' weights
                    of MLP trunks (W_l as [out, in]: its rows orthogonal; the output layer and biases
                    excluded; other trunks are refused by the config),
                    Chung et al. 2024 (wechu/parseval_reg agent.py, s = 2 there: their orthogonal
                    init's gain^2). Deviations: no diagonal layers (theirs, MetaWorld only), our
                    networks keep their own initialisation (theirs: orthogonal with gain sqrt 2)
    shrink_perturb  theta <- shrink * theta + perturb * theta_fresh (a freshly initialised network),
                    every parameter, at each stage start or every `shrink_perturb_every` updates
                    (Ash & Adams 2020, JordanAsh/warm_start run.py, 0.4 / 0.1); the treated
                    parameters' Adam state is cleared (theirs builds a new Adam each round); the
                    target critic is left to follow by Polyak averaging (theirs has none)
    reset           the last `reset` shared layers re-initialised at each stage start (all if k >= their
                    number; per-task heads are not counted: a new task's head is fresh anyway; a
                    LayerNorm belongs to the layer it normalises), the target critic's copies set to
                    the critic's (after any frozen weights are put back), their Adam state cleared,
                    replay kept (Nikishin et al. 2022, evgenii-nikishin/rl_with_resets, resets the
                    whole agent: every layer, the target, Adam and the temperature; here k is the
                    user's, and the temperature is kept unless `reset_temperature`: then every
                    temperature goes back to sac.init_alpha with a fresh Adam, as theirs)

"Stage start": a new stage of a continual run (given boundaries), a detected boundary (hidden, with
a detector). A multi-task run has none: there only the per-update remedies act.
"""

from __future__ import annotations

import math

import torch

from agents import seeding
from agents.hooks import LearnerHook
from agents.trunks import EnsembleLayerNorm, MLPTrunk

NETWORK_NAMES = {"actor": ("actor",), "critic": ("critic",), "both": ("actor", "critic")}


class FreshWeights:
    """Freshly initialised networks on demand (`draw()`: {network: {name: tensor}}), each draw from
    its own seed of the run's "plasticity-init" stream (numbered: a resumed run continues the count)."""

    def __init__(self, build, seed: int, device):
        self.build, self.seed, self.device, self.draws = build, seed, device, 0

    def draw(self) -> dict[str, dict[str, torch.Tensor]]:
        devices = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # manual_seed seeds CUDA too: keep the learner's stream
            torch.manual_seed(seeding.seed_for(self.seed, "plasticity-init", self.draws))
            actor, critic = self.build()
        self.draws += 1
        return {name: {n: p.detach().to(self.device) for n, p in net.named_parameters()}
                for name, net in (("actor", actor), ("critic", critic))}


class Remedy(LearnerHook):
    """A remedy: a learner hook that may also act at stage starts (`stage_started`)."""

    def __init__(self, learner, strategy, networks: str, fresh: FreshWeights):
        self.learner, self.strategy, self.fresh = learner, strategy, fresh
        self.networks = NETWORK_NAMES[networks]

    def shared(self, network: str) -> list[tuple[str, torch.nn.Parameter]]:
        """The network's shared, trainable parameters (what a remedy may change)."""
        return [(n, p) for n, p in getattr(self.learner, network).named_shared_parameters() if p.requires_grad]

    def forget_moments(self, network: str, params) -> None:
        """Clear these parameters' Adam state (a fresh start for them)."""
        state = self.learner.optimizers[network].state
        for p in params:
            state.pop(p, None)

    def stage_started(self) -> None:
        pass

    def counts(self) -> dict[str, int]:
        """What it did so far, for the logs ({"redo/recycled": units}); most remedies: nothing."""
        return {}


NORMS = (torch.nn.LayerNorm, EnsembleLayerNorm)


def norm_parameters(network) -> set[int]:
    """ids of the parameters of the network's normalization layers."""
    return {id(p) for m in network.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}


class L2Init(Remedy):
    def __init__(self, *args, coef: float):
        super().__init__(*args)
        self.coef = coef
        self.initial = {net: [p.detach().clone() for p in self.pulled(net)] for net in self.networks}

    def pulled(self, network: str) -> list[torch.nn.Parameter]:
        norms = norm_parameters(getattr(self.learner, network))
        return [p for _, p in self.shared(network) if id(p) not in norms]

    def loss_terms(self, network, batch, features):
        if network not in self.networks:
            return {}
        params = self.pulled(network)
        return {f"plasticity/l2_init/{network}":
                self.coef * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, self.initial[network]))}

    def synced_tensors(self, network):
        return {f"theta0.{i}": t for i, t in enumerate(self.initial.get(network, []))}

    def state_dict(self):
        return {"initial": self.initial}

    def load_state_dict(self, state):
        for net, tensors in state["initial"].items():
            for mine, saved in zip(self.initial[net], tensors):
                mine.copy_(saved)


def hidden_weights(network) -> list[torch.Tensor]:
    """The weight matrices of the network's MLP trunks' layers (its hidden layers, not the output
    layer), [K, in, out] each."""
    return [layer.weight for m in network.modules() if isinstance(m, MLPTrunk) for layer in m.layers]


class Parseval(Remedy):
    def __init__(self, *args, coef: float, scale: float):
        super().__init__(*args)
        self.coef, self.scale = coef, scale

    def loss_terms(self, network, batch, features):
        if network not in self.networks:
            return {}
        total = 0.0
        for weight in hidden_weights(getattr(self.learner, network)):
            rows = weight.transpose(-1, -2)  # [K, out, in]: torch's W
            gram = rows @ rows.transpose(-1, -2)
            eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
            width = gram.shape[-1]
            total = total + (64 / width) ** 2 * ((gram - self.scale * eye) ** 2).sum()
        return {f"plasticity/parseval/{network}": self.coef * total}


class ShrinkPerturb(Remedy):
    def __init__(self, *args, shrink: float, perturb: float, every: int):
        super().__init__(*args)
        self.shrink, self.perturb, self.every = shrink, perturb, every

    @torch.no_grad()
    def apply(self) -> None:
        fresh = self.fresh.draw()
        for net in self.networks:
            params = self.shared(net)
            for name, p in params:
                p.mul_(self.shrink).add_(fresh[net][name], alpha=self.perturb)
            self.forget_moments(net, [p for _, p in params])
        self.strategy.restore_frozen()

    def stage_started(self) -> None:
        if not self.every:
            self.apply()

    def after_step(self, networks):
        if self.every and "actor" in networks and self.learner.num_updates % self.every == self.every - 1:
            self.apply()  # num_updates counts this update from its end: the every-th update's step


def layers_of(network) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """The network's layers in order, each its (name, parameter) pairs: every module that holds
    parameters itself (a linear layer, a GRU), a normalization layer joined to the layer it normalises
    (an MLP trunk's LayerNorm to its first layer, which it follows; any other to the layer before it)."""
    layers, pending = [], []
    for prefix, module in network.named_modules():
        own = [(f"{prefix}.{n}" if prefix else n, p) for n, p in module.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(module, NORMS) and prefix.endswith("trunk.norm"):
            pending = own  # registered before the layers it follows
        elif isinstance(module, NORMS) and layers:
            layers[-1] += own
        else:
            layers.append(own + pending)
            pending = []
    return layers


class Reset(Remedy):
    def __init__(self, *args, layers: int, temperature: bool = False):
        super().__init__(*args)
        self.layers, self.temperature = layers, temperature

    def reset_names(self, network: str) -> set[str]:
        """The parameter names the reset re-initialises: the last k layers' shared parameters."""
        shared = {name for name, _ in self.shared(network)}
        layers = [layer for layer in layers_of(getattr(self.learner, network)) if any(n in shared for n, _ in layer)]
        return {name for layer in layers[-self.layers:] for name, _ in layer if name in shared}

    @torch.no_grad()
    def stage_started(self) -> None:
        fresh = self.fresh.draw()
        names = {net: self.reset_names(net) for net in self.networks}
        for net in self.networks:
            params = [(n, p) for n, p in getattr(self.learner, net).named_parameters() if n in names[net]]
            for name, p in params:
                p.copy_(fresh[net][name])
            self.forget_moments(net, [p for _, p in params])
        self.strategy.restore_frozen()
        if self.temperature:  # a policy re-learned at a spent temperature barely explores (BENCHMARKS.md, 3RL)
            self.learner.log_alpha.fill_(math.log(self.learner.cfg.init_alpha))
            self.learner.alpha_optimizer.state.clear()
        if "critic" in self.networks:  # the target takes the critic's new layers, frozen entries put back
            online = dict(self.learner.critic.named_parameters())
            for name, q in self.learner.critic_target.named_parameters():
                if name in names["critic"]:
                    q.copy_(online[name])
