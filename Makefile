# riffmask: `make demo` and `make test` work on a fresh machine (they create .venv themselves).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GENRES ?=
SOUND ?=
DEMO_OUT ?= demo_out

.PHONY: install browser demo app test bench lint clean

install: $(STAMP)

# CPU machines get the CPU build of torch first, so the package's `torch>=2.4` is already met and
# pip never pulls the multi-GB CUDA wheels; machines with a GPU keep (or get) the default torch.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	  else $(PY) -m pip install -q torch==2.13.0; fi; }
	$(PY) -m pip install -q -e '.[train,app,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m riffmask.demo --out $(DEMO_OUT) $(if $(GENRES),--genres $(GENRES)) $(if $(SOUND),--sound $(SOUND))

# The studio on the demo's tiny model (written if missing), so it works offline on a CPU; the
# model's music is noise. `riffmask app --model riffusion/riffusion-model-v1` (or your fine-tune) for real music.
APP_MODEL ?= $(DEMO_OUT)/tiny-base
app: $(STAMP)
	test -d $(APP_MODEL) || $(PY) -m riffmask.cli tiny-model $(APP_MODEL)
	$(PY) -m riffmask.cli app --config fast --model $(APP_MODEL) --out $(DEMO_OUT)/takes

# The report tests open pages in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the report tests need Chromium: sudo apt-get install chromium"; exit 1; fi; }

test: $(STAMP) browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.run_all

# ruff, and import-linter's layers contract (pyproject.toml) on the built wheel (docs/architecture.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/test_architecture.py -k layers

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
