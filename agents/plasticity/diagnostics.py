"""Plasticity diagnostics: how much of each network can still learn, measured at every log point.

For the actor and the critic (TensorBoard `plasticity/<network>/<measure>`, and plasticity.jsonl
for the report):

    dormant       the fraction of tau-dormant hidden units, tau = 0 (ReDo, Sokar et al. 2023):
                  a unit's score is its mean |activation| over the probe batch divided by the mean
                  of that over its layer; dormant if score <= tau (google/dopamine labs/redo
                  weight_recyclers.py). Every hidden layer of every ensemble member counts (the
                  twin critics are two networks); the fraction is over all their units.
    dormant_0.1   the same with tau = 0.1
    srank         the effective rank of the penultimate layer's features (Kumar et al. 2021):
                  the least k with sum_{i<=k} sigma_i / sum_i sigma_i >= 1 - delta, delta = 0.01,
                  over the singular values of the [B, H] feature matrix (the mean over members)
    weight_norm   ||theta||_2 over the network's own parameters
    grad_norm     ||g||_2 of the network's gradient in the first update after the previous log
                  point (penalties included, after the strategies' masks, before sac.max_grad_norm)
    update_norm   ||theta_after - theta_before||_2 of that update (a remedy's change in it included)
    entropy       (actor) -E[log pi] on the probe batch

The probe batch: `plasticity.probe_rows` transitions (windows, with a memory) drawn from replay
with a stream of its own, over the tasks the learner trains (the replay's rng is untouched), and
run through the critic's and the actor's loss passes without gradients, their sampled actions
drawn from that stream too (`own_draws`: the learner's torch stream is untouched). Units: the hidden layers
of MLP trunks (agents/trunks.py records them); other trunks (hyper, care, moore, bronet) report
their output layer only, and a memory's GRU units are not scored; a recurrent network's windows
count every step as a row, padding and burn-in included.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from agents import seeding
from agents.hooks import LearnerHook
from agents.trunks import TRUNKS, MLPTrunk

NETWORKS = ("actor", "critic")
SRANK_DELTA = 0.01


def unit_scores(activation: torch.Tensor) -> torch.Tensor:
    """[K, B, H] activations -> [K, H] ReDo scores: mean |activation| over the batch, over its layer's mean."""
    score = activation.abs().float().mean(dim=1)
    return score / (score.mean(dim=-1, keepdim=True) + 1e-9)


def dormant_fraction(layers: list[torch.Tensor], tau: float) -> float:
    """The fraction of units, over every layer and member, whose ReDo score is <= tau."""
    scores = [unit_scores(a) for a in layers]
    return float(sum(int((s <= tau).sum()) for s in scores) / max(1, sum(s.numel() for s in scores)))


def srank(features: torch.Tensor, delta: float = SRANK_DELTA) -> float:
    """Effective rank of [K, B, H] (or [B, H]) features, the mean over the K members."""
    matrices = features.float() if features.dim() == 3 else features.float()[None]
    ranks = []
    for matrix in matrices:
        sigma = torch.linalg.svdvals(matrix)
        total = sigma.sum()
        if total <= 0:
            ranks.append(0)
            continue
        ranks.append(int((torch.cumsum(sigma, 0) / total < 1 - delta).sum()) + 1)
    return float(np.mean(ranks))


def norm(tensors) -> float:
    norms = [torch.linalg.vector_norm(t.detach().float()) for t in tensors if t is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


@contextmanager
def recorded(network: torch.nn.Module):
    """Inside it, every trunk in `network` records its hidden activations [K, B, H] into the list
    it yields (an MLP trunk each layer's, any other trunk its output)."""
    layers: list[torch.Tensor] = []
    handles = []
    for module in network.modules():
        if isinstance(module, MLPTrunk):
            module.recording = layers
        elif type(module) in TRUNKS.values():
            handles.append(module.register_forward_hook(lambda _m, _i, out: layers.append(out)))
    try:
        yield layers
    finally:
        for module in network.modules():
            if isinstance(module, MLPTrunk):
                module.recording = None
        for handle in handles:
            handle.remove()


@contextmanager
def own_draws(rng: np.random.Generator, device: torch.device):
    """Torch's random draws inside (the passes' sampled actions) come from `rng`, and the learner's own
    stream is left where it was: probing a network does not change the run."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(rng.integers(2 ** 31)))
        yield


def probe(learner, batch, rng: np.random.Generator) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """`batch` through the critic's and the actor's loss passes (no gradients, sampled actions drawn from
    `rng`): ({network: each hidden layer's activations [K, rows, H]}, the policy's entropy). A memory's
    windows give rows x steps rows."""
    recordings: dict[str, list[torch.Tensor]] = {}

    @contextmanager
    def record(network):
        with recorded(network) as layers:
            yield
        recordings["actor" if network is learner.actor else "critic"] = [a.flatten(1, -2) for a in layers]

    with own_draws(rng, learner.device):
        entropy = learner.probe_passes(batch, record)
    return recordings, entropy


def own_parameters(learner, network: str) -> list[torch.Tensor]:
    """What the network's optimizer trains of the network itself (not a hook's parameters)."""
    return learner.actor.own_parameters() if network == "actor" else list(learner.critic.parameters())


class Diagnostics(LearnerHook):
    """Measures the networks at log points (`measure`), and the first update after each (its
    gradient and update norms: a learner hook, last in the list, armed by `measure`)."""

    def __init__(self, learner, probe_rows: int, seed: int):
        self.learner, self.probe_rows = learner, probe_rows
        self.rng = seeding.rng(seed, "plasticity-probe")
        self.armed = True  # measure the next update
        self.stepped: dict[str, dict[str, float]] = {}  # network -> grad_norm, update_norm
        self._before: dict[str, list[torch.Tensor]] = {}

    def before_step(self, networks) -> None:
        if not self.armed:
            return
        for net in networks:
            params = own_parameters(self.learner, net)
            self._before[net] = [p.detach().clone() for p in params]
            self.stepped[net] = {"grad_norm": norm(p.grad for p in params)}

    @torch.no_grad()
    def after_step(self, networks) -> None:
        if not self.armed:
            return
        for net in networks:
            now = own_parameters(self.learner, net)
            self.stepped[net]["update_norm"] = norm(p - q for p, q in zip(now, self._before.pop(net)))
        self.armed = "actor" not in networks  # the actor steps last in either update order

    def measure(self, replay, tasks: list[int]) -> dict[str, float]:
        """{"plasticity/<network>/<measure>": value} now, on a fresh probe batch; arms the next update."""
        per_task = max(1, self.probe_rows // max(1, len(tasks)))
        recordings, entropy = probe(self.learner, replay.sample(per_task, self.rng, tasks), self.rng)
        out = {}
        for net in NETWORKS:
            layers = recordings[net]
            out[f"plasticity/{net}/dormant"] = dormant_fraction(layers, 0.0)
            out[f"plasticity/{net}/dormant_0.1"] = dormant_fraction(layers, 0.1)
            out[f"plasticity/{net}/srank"] = srank(layers[-1])
            out[f"plasticity/{net}/weight_norm"] = norm(own_parameters(self.learner, net))
            for key, value in self.stepped.get(net, {}).items():
                out[f"plasticity/{net}/{key}"] = value
        out["plasticity/actor/entropy"] = float(entropy)
        self.armed, self.stepped = True, {}  # no update before the next log point: no norms there
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "armed": self.armed, "stepped": self.stepped}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.armed, self.stepped = state["armed"], state["stepped"]
