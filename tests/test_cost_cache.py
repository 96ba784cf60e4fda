"""`sweeps validate` answers from disk: a traced cost is cached under a key of everything the trace depends on
(trainables/cost/cache.py), served identically, invalidated when a reference or the code changes, and the missing
ones are traced in parallel processes with the same numbers as one after another."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict

import pytest

from conftest import REPO, tiny_adapt_dict
from sweeps import cost as sweep_cost_mod
from sweeps.cost import sweep_cost
from trainables.config_io import validate_config
from trainables.cost import cache


@pytest.fixture
def cost_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cost-cache"))
    return tmp_path / "cost-cache"


def _configs(tiny_models, tmp_path, n=1):
    return [validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__device="cpu", train__batch_size=1 + i))
            for i in range(n)]


def _counting_estimate(monkeypatch):
    calls = []
    real = sweep_cost_mod._estimate

    def counted(cfg, gpus):
        calls.append(cfg.train.batch_size)
        return real(cfg, gpus)

    monkeypatch.setattr(sweep_cost_mod, "_estimate", counted)
    return calls


def test_a_cached_cost_is_served_identically_and_only_traced_once(tiny_models, tmp_path, cost_cache, monkeypatch):
    calls = _counting_estimate(monkeypatch)
    cfgs = _configs(tiny_models, tmp_path)
    first = sweep_cost(cfgs * 3, "H100")               # three trials of one configuration: one trace
    assert calls == [1] and len(list(cost_cache.glob("*.json"))) == 1
    second = sweep_cost(cfgs, "H100")                  # another process would read the same file
    assert calls == [1]
    assert asdict(second.per_trial[0][1]) == asdict(first.per_trial[0][1]) and second.text() == sweep_cost(cfgs).text()
    # neutral fields (seed, prompt, iterations) share the entry; a batch size does not
    other_seed = cfgs[0].model_copy(update={"seed": 7, "prompt": "a dog"})
    sweep_cost([other_seed], "H100")
    assert calls == [1]
    sweep_cost(_configs(tiny_models, tmp_path, 2)[1:], "H100")
    assert calls == [1, 2]


def test_a_changed_reference_or_a_corrupt_entry_is_traced_again(tiny_models, tmp_path, cost_cache, monkeypatch):
    calls = _counting_estimate(monkeypatch)
    cfgs = _configs(tiny_models, tmp_path)
    sweep_cost(cfgs, "H100")
    key = cache.cost_key(cfgs[0], ("CPU",))
    (cost_cache / f"{key}.json").write_text("{not json")
    sweep_cost(cfgs, "H100")
    assert calls == [1, 1]                             # corrupt: traced again, then rewritten
    assert cache.load(key) is not None
    gen = tiny_models["generator"]
    st = gen.stat()
    os.utime(gen, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # the checkpoint replaced
    try:
        assert cache.cost_key(cfgs[0], ("CPU",)) != key
        sweep_cost(cfgs, "H100")
        assert calls == [1, 1, 1]
    finally:
        os.utime(gen, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_key_follows_code_and_library_versions(tiny_models, tmp_path, monkeypatch):
    cfg = _configs(tiny_models, tmp_path)[0]
    key = cache.cost_key(cfg, ("CPU",))
    env = dict(cache.environment_stamp())
    monkeypatch.setattr(cache, "environment_stamp", lambda: {**env, "trainables": "edited"})
    assert cache.cost_key(cfg, ("CPU",)) != key
    monkeypatch.setattr(cache, "environment_stamp", lambda: {**env, "torch": "9.9"})
    assert cache.cost_key(cfg, ("CPU",)) != key
    assert cache.cost_key(cfg, ("H100",)) != key


@pytest.mark.slow
def test_parallel_traces_equal_serial_ones(tiny_models, tmp_path, cost_cache):
    cfgs = _configs(tiny_models, tmp_path, 3)
    parallel = sweep_cost(cfgs, "H100", jobs=2)        # three misses, two spawned processes
    serial = [sweep_cost_mod._estimate(c, ("CPU",)) for c in cfgs]
    assert [asdict(r) for _, r in parallel.per_trial] == [asdict(r) for r in serial]


@pytest.mark.slow
def test_one_configuration_traces_its_selection_pass_in_a_second_process(tiny_models, tmp_path, cost_cache,
                                                                          monkeypatch):
    """A one-configuration sweep with layer selection: the pass traced in a spawned process while this one traces
    the rest (sweeps.cost._trace_one); the report equals two whole steps traced here."""
    from trainables.cost import model as cost_model

    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__device="cpu", layers__k=2))
    contexts = []
    real = sweep_cost_mod.get_context
    monkeypatch.setattr(sweep_cost_mod, "get_context", lambda method: (contexts.append(method), real(method))[1])
    monkeypatch.setattr(cost_model, "_SELECTIONS", {})
    (_, apart), = sweep_cost([cfg], "H100", jobs=2).per_trial
    assert contexts == ["spawn"]
    whole = cost_model.estimate(cfg, gpus=("CPU",), compose=False)
    assert asdict(apart) == asdict(whole)


def test_a_warm_validate_does_not_import_torch(tiny_models, tmp_path, cost_cache):
    import yaml

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": tiny_adapt_dict(tiny_models, tmp_path / "out"),
                                     "grid": {"seed": [0, 1]}}, sort_keys=False))
    env = {**os.environ, cache.CACHE_ENV: str(cost_cache), "PYTHONPATH": str(REPO)}
    probe = ("import sys; from sweeps.__main__ import main; rc = main(['validate', '--skip-model-check', {path!r}]); "
             "print('TORCH', 'torch' in sys.modules); sys.exit(rc)").format(path=str(sweep))
    cold = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    warm = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr[-2000:] + warm.stderr[-2000:]
    assert "TORCH True" in cold.stdout and "TORCH False" in warm.stdout
    cost_lines = [line for line in cold.stdout.splitlines() if line.startswith("cost")]
    assert cost_lines and cost_lines == [line for line in warm.stdout.splitlines() if line.startswith("cost")]


def test_the_cli_ends_a_traced_validate_with_its_output_whole_and_its_code(tiny_models, tmp_path, cost_cache):
    """`python -m sweeps` skips the interpreter's teardown after a command that traced (sweeps.__main__.exit_now):
    every line still reaches a pipe, and the exit code is the command's."""
    import yaml

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": tiny_adapt_dict(tiny_models, tmp_path / "out")},
                                    sort_keys=False))
    env = {**os.environ, cache.CACHE_ENV: str(cost_cache), "PYTHONPATH": str(REPO)}
    env.pop("PYTHONUNBUFFERED", None)                # a pipe's output block-buffered, as for most users
    cold = subprocess.run([sys.executable, "-m", "sweeps", "validate", "--skip-model-check", str(sweep)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert cold.returncode == 0, cold.stderr[-2000:]
    lines = cold.stdout.splitlines()
    assert lines[0].startswith("sweep s: 1 trial") and any(line.startswith("cost per step") for line in lines)
    assert lines[-1] == "model references: not checked (--skip-model-check)"
    failing = ("import sys, trainables.cost.model; from sweeps.__main__ import exit_now; "
               "print('last words', end=''); sys.stderr.write('and these'); exit_now(3)")
    out = subprocess.run([sys.executable, "-c", failing], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert (out.returncode, out.stdout, out.stderr.endswith("and these")) == (3, "last words", True), out.stderr
