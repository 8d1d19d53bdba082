"""The architecture's promises: imports only point down the layers, no import cycles, no module
over ~400 lines nor class over ~200, and every seat (learner hooks, trunks, heads, balancers, synchronizers) is
called where agents/hooks.py says, in that order."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.balancers import BALANCERS, Balancer, TaskLosses
from agents.heads import HEADS
from agents.hooks import LearnerHook, Synchronizer
from agents.replay import MultiTaskReplay
from agents.sac import SACConfig, SACLearner
from agents.trunks import TRUNKS
from tests.conftest import REPO, train_in_process

# Who may import whom: launch -> integrations -> continual -> agents / metrics / envs; metrics reads
# logs only.
ALLOWED = {"launch": {"launch", "integrations", "continual", "agents", "metrics", "envs"},
           "integrations": {"integrations", "continual", "agents", "envs"},
           "continual": {"continual", "agents", "envs"},
           "agents": {"agents"}, "envs": {"envs"}, "metrics": {"metrics"}}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in ALLOWED:
        for path in (REPO / package).rglob("*.py"):
            modules[".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = path
    return modules


def _imports(path: Path, modules=None) -> set[str]:
    """Every module of ours that `path` imports, at any depth of the file (function-level too).
    `from pkg import mod` depends on pkg.mod (pkg's own __init__ only if a name comes from it)."""
    modules = _modules() if modules is None else modules
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {name for name in found if name.split(".")[0] in ALLOWED}


def _module_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, modules) if m in modules} for name, path in modules.items()}


def test_imports_only_point_down_the_layers():
    upward = [(module, target) for module, targets in _module_graph().items() for target in targets
              if target.split(".")[0] not in ALLOWED[module.split(".")[0]]]
    assert upward == []


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [module, target])}")
            if target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_layer_check_can_fail(tmp_path):
    """The two checks above see function-level imports and relative cycles: a sample would fail."""
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from continual.strategies import METHODS\n    from launch.loop import trainer\n")
    assert _imports(sample) == {"continual.strategies", "launch.loop.trainer"}


# Inside launch/: the actors know neither the loop nor the learner ranks; the config tree knows only
# the error type; the machine (devices, cores, sizing) knows nothing of launch.
LAUNCH_FORBIDDEN = {"launch.actors": {"launch.loop", "launch.distributed", "launch.rllib_engine", "launch.train"},
                    "launch.config": "all but launch.config and launch.errors",
                    "launch.machine": "all of launch but launch.errors"}


def _launch_violations(graph) -> list[tuple[str, str]]:
    found = []
    for module, targets in graph.items():
        for target in (t for t in targets if t.startswith("launch.") and not t.startswith(module)):
            if module.startswith("launch.actors"):
                bad = any(target == f or target.startswith(f + ".") for f in LAUNCH_FORBIDDEN["launch.actors"])
            elif module.startswith("launch.config"):
                bad = not (target.startswith("launch.config") or target == "launch.errors")
            elif module == "launch.machine":
                bad = target != "launch.errors"
            else:
                bad = False
            if bad:
                found.append((module, target))
    return found


def test_layers_inside_launch():
    assert _launch_violations(_module_graph()) == []
    # ... and the check can fail: an actor that imports the loop, config reading the machine
    assert _launch_violations({"launch.actors.local": {"launch.loop.trainer"},
                               "launch.config.validate": {"launch.machine"},
                               "launch.machine": {"launch.actors"}}) == [
        ("launch.actors.local", "launch.loop.trainer"), ("launch.config.validate", "launch.machine"),
        ("launch.machine", "launch.actors")]


def test_launch_has_about_ten_modules_at_its_top():
    top = sorted(p.stem for p in (REPO / "launch").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 10, top


def test_no_module_over_about_400_lines():
    long = {str(p.relative_to(REPO)): n for package in ALLOWED for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 430}
    assert long == {}


def test_no_class_over_about_200_lines():
    long = {f"{p.relative_to(REPO)}: {node.name}": n for package in ALLOWED for p in (REPO / package).rglob("*.py")
            for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, ast.ClassDef) and (n := node.end_lineno - node.lineno + 1) > 215}
    assert long == {}


# -- the seats, each with a tiny example, called in the documented order ---------------------------

CALLS: list[str] = []


class RecordingHook(LearnerHook):
    def __init__(self, name="hook"):
        self.name = name
        self.extra = torch.nn.Parameter(torch.ones(1))  # its own parameter, trained by its loss term

    def parameters(self, network):
        return [self.extra] if network == "critic" else []

    def loss_terms(self, network, batch, features):
        CALLS.append(f"{self.name}.loss_terms({network}, features {tuple(features.shape)})")
        return {"aux": (self.extra * features.mean()) ** 2} if network == "critic" else {}

    def observe_gradients(self, network):
        CALLS.append(f"{self.name}.observe_gradients({network})")

    def before_step(self, networks):
        CALLS.append(f"{self.name}.before_step({','.join(networks)})")

    def after_step(self, networks):
        CALLS.append(f"{self.name}.after_step({','.join(networks)})")


class RecordingBalancer(Balancer):
    def backward(self, losses, params, network, retain_graph=False, gather=None):
        CALLS.append(f"balancer.backward({network}, {losses.num_tasks} tasks)")
        super().backward(losses, params, network, retain_graph)

    def after_step(self, network, losses):
        CALLS.append(f"balancer.after_step({network})")


class RecordingSync(Synchronizer):
    def after_backward(self, params):
        CALLS.append(f"sync.after_backward({len(params)} tensors)")

    def after_update(self, learner):
        CALLS.append("sync.after_update")


class ConstantTrunk(torch.nn.Module):
    """A trivial trunk: one learned feature vector, whatever the input."""

    def __init__(self, ensemble, in_features, hidden_sizes, num_tasks, **options):
        super().__init__()
        self.out_features = hidden_sizes[-1]
        self.value = torch.nn.Parameter(torch.randn(ensemble, 1, self.out_features))

    def forward(self, x, task):
        return self.value.expand(-1, len(x), -1)

    def task_specific(self, name):
        return False


def _learner_and_batch(order="sequential", **sac):
    torch.manual_seed(0)
    learner = SACLearner(SACConfig(hidden_sizes=(8,), batch_size_per_task=4, update_order=order, **sac),
                         obs_dim=3, action_dim=2, num_tasks=2, device=torch.device("cpu"))
    replay = MultiTaskReplay(2, 20, 3, 2)
    rng = np.random.default_rng(0)
    replay.add(np.repeat([0, 1], 10), rng.normal(size=(20, 3)).astype(np.float32),
               rng.uniform(-1, 1, (20, 2)).astype(np.float32), rng.normal(size=20).astype(np.float32),
               rng.normal(size=(20, 3)).astype(np.float32), np.zeros(20, np.float32))
    return learner, replay.sample(4, rng)


@pytest.mark.parametrize("order", ["sequential", "simultaneous"])
def test_hooks_balancer_and_synchronizer_are_called_in_the_documented_order(order):
    learner, batch = _learner_and_batch(order)
    learner.balancers = {net: RecordingBalancer() for net in learner.balancers}
    learner.synchronizer = RecordingSync()
    hooks = [RecordingHook("a"), RecordingHook("b")]
    learner.add_hook_parameters(hooks)
    CALLS.clear()
    info = learner.update(batch, hooks)
    critic = ["a.loss_terms(critic, features (2, 8, 8))", "b.loss_terms(critic, features (2, 8, 8))"]
    actor = ["a.loss_terms(actor, features (1, 8, 8))", "b.loss_terms(actor, features (1, 8, 8))"]

    def gradients(network, tensors):
        return [f"balancer.backward({network}, 2 tasks)", f"a.observe_gradients({network})",
                f"b.observe_gradients({network})", f"sync.after_backward({tensors} tensors)"]

    def step(networks):
        return [f"a.before_step({networks})", f"b.before_step({networks})",
                f"a.after_step({networks})", f"b.after_step({networks})",
                *(f"balancer.after_step({net})" for net in networks.split(","))]
    critic_params = len(list(learner.critic.parameters())) + 2  # + each hook's own parameter
    actor_params = len(list(learner.actor.parameters()))
    if order == "sequential":
        expected = (critic + gradients("critic", critic_params) + step("critic")
                    + actor + gradients("actor", actor_params) + step("actor"))
    else:
        expected = (critic + actor + gradients("critic", critic_params) + gradients("actor", actor_params)
                    + step("critic,actor"))
    expected += ["balancer.backward(alpha, 2 tasks)", "sync.after_backward(1 tensors)", "balancer.after_step(alpha)",
                 "sync.after_update"]
    assert CALLS == expected
    # The hooks' own parameters were trained by their loss terms, in the critic's optimizer.
    assert all(float(h.extra.detach()) != 1.0 for h in hooks)
    assert "loss/aux" in info
    # ... and are not part of the policy vector sent to actors.
    assert all(h.extra is not p for h in hooks for p in learner.actor.parameters())


def test_the_mean_balancer_is_the_mean_over_tasks_and_what_the_learner_uses_by_default():
    assert all(type(b) is Balancer for b in _learner_and_batch()[0].balancers.values()) and "mean" in BALANCERS
    terms = [torch.tensor([1.0, 3.0, 10.0, 20.0]), torch.tensor([2.0, 2.0, 0.0, 4.0])]
    losses = TaskLosses(terms, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(losses.per_task(), torch.tensor([2.0 + 2.0, 15.0 + 2.0]))
    assert float(losses.mean()) == pytest.approx((4.0 + 17.0) / 2)


def test_a_new_trunk_is_one_class_and_one_registry_line(monkeypatch):
    monkeypatch.setitem(TRUNKS, "constant", ConstantTrunk)
    learner, batch = _learner_and_batch(trunk="constant")
    assert isinstance(learner.actor.net.trunk, ConstantTrunk) and isinstance(learner.critic.net.trunk, ConstantTrunk)
    before = learner.actor.net.trunk.value.detach().clone()
    learner.update(batch)
    assert not torch.equal(before, learner.actor.net.trunk.value)  # it is trained like any trunk
    shared = [name for name, _ in learner.actor.named_shared_parameters()]
    assert shared == ["net.trunk.value"]  # the multi-head is per task; the trunk is shared
    assert set(HEADS) == {"single", "multi", "hyper"} and set(TRUNKS) >= {"mlp", "hyper"}


@pytest.mark.integration
def test_no_behaviour_change_pinned_evaluations(tmp_path):
    """The refactoring into seats changed no result: on a fixed seed, a multi-task and a continual
    (EWC) pointmass run give bit for bit the evaluations the code before it gave (pinned in
    tests/data/pinned_evals.json per kind of CPU, computed on that code with tests/data/pin_evals.py)."""
    pinned = json.loads((REPO / "tests" / "data" / "pinned_evals.json").read_text())
    from tests.data.pin_evals import JOBS, evaluations, matches_pinned
    for name, args in JOBS.items():
        assert train_in_process(*args, "--run-dir", tmp_path / name).returncode == 0
        assert matches_pinned(evaluations(tmp_path / name), pinned, name), name
