# `make demo` and `make test` each set up .venv on first use (pinned, CPU-only torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lipkit-installed

.PHONY: demo test install peer bench clean chromium cairo wordnet theory-docs results recipes emergent faults docs

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,eval,data,towers]"
	@# Guard: only the CPU torch 2.13.0 build, and no CUDA wheels pulled in by anything.
	@$(PY) -m pip list 2>/dev/null | grep -iE '^(nvidia-|triton|cuda-)' && { echo "error: CUDA packages got installed into $(VENV)"; exit 1; } || true
	@$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v == '2.13.0+cpu' else f'error: expected torch 2.13.0+cpu, got {v}')"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/lipkit demo --out runs/demo

# The open_clip export/import tests, the CLIP_benchmark agreement test and the docs' open_clip
# snippet need open_clip (and clip-benchmark), which live in .venv-peer only: they run there when it
# exists (`make peer`; CI builds it), and are skipped in .venv with a note.
PEER_TESTS := tests/test_interop_open_clip.py tests/test_clip_benchmark_agreement.py tests/test_readme_snippets.py

test: $(STAMP) chromium cairo wordnet
	$(PY) -m pytest -q
	@if [ -f $(PEER_STAMP) ]; then $(MAKE) --no-print-directory peer && \
	  echo "$(PEER)/bin/python -m pytest -q $(PEER_TESTS)" && \
	  HF_HUB_OFFLINE=1 $(PEER)/bin/python -m pytest -q -p no:cacheprovider $(PEER_TESTS); \
	else echo "note: $(PEER) is absent, so the open_clip tests were skipped; make peer builds it"; fi

# The report test renders the page in headless Chromium: Debian's package, installed where apt
# works and we are root; elsewhere that one test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } || \
	    echo "note: could not install chromium; the report rendering test will be skipped"; \
	  else echo "note: chromium is not installed; the report rendering test will be skipped"; fi; }

# cairosvg (Tux Paint and Open Clip Art SVGs) loads the system library libcairo2: Debian's
# package, installed where apt works and we are root.
cairo:
	@$(PY) -c "import cairocffi" >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends libcairo2 >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends libcairo2 >/dev/null 2>&1; } || \
	    echo "note: could not install libcairo2; SVG sources will not rasterise"; \
	  else echo "note: libcairo2 is missing (apt-get install libcairo2); SVG sources will not rasterise"; fi; }

# WordNet's synonyms for the strong recipe's text augmentation (lipkit.data.text_augment): Debian's
# wordnet-base (/usr/share/wordnet), installed where apt works and we are root.
wordnet:
	@test -f /usr/share/wordnet/data.noun || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null 2>&1; } || \
	    echo "note: could not install wordnet-base; text augmentation will have no synonyms"; \
	  else echo "note: wordnet-base is missing (apt-get install wordnet-base); text augmentation will have no synonyms"; fi; }

# The peer trainer for benchmarks (and the open_clip export/import tests) lives in its own
# environment: transformers and timm import torchvision whenever it is installed, and the only
# torchvision for torch 2.13.0 is a CUDA build. transformers is there for open_clip's Hugging Face
# tokenizers (lipkit's exports), pytest for the tests. CLIP_benchmark 1.6.2 (the agreement test and
# benchmarks/clip_benchmark_speed.py) goes in without its metadata's dependencies: those its
# evaluation code imports are pinned on the line before (webdataset, requests), and pycocoevalcap
# (104 MB of Java jars) serves only its captioning metric.
PEER := .venv-peer
PEER_STAMP := $(PEER)/.lipkit-peer-installed
CLIP_BENCHMARK_DEPS := "webdataset==1.0.2" "braceexpand==0.1.7" "requests==2.34.2" "urllib3==2.8.0" \
	"charset-normalizer==3.5.3" "certifi==2026.10.19.post1"

$(PEER_STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install --quiet -c constraints.txt -e . "open_clip_torch==3.3.0" "torchvision==0.28.0" timm "transformers==5.23.0" pytest $(CLIP_BENCHMARK_DEPS)
	$(PEER)/bin/python -m pip install --quiet --no-deps "clip-benchmark==1.6.2"
	@$(PEER)/bin/python -m pip list 2>/dev/null | grep -iE '^(nvidia-|triton|cuda-)' && { echo "error: CUDA packages got installed into $(PEER)"; exit 1; } || true
	@$(PEER)/bin/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v == '2.13.0+cpu' else f'error: expected torch 2.13.0+cpu, got {v}')"
	touch $@

peer: $(PEER_STAMP)

bench: $(STAMP) $(PEER_STAMP)
	$(VENV)/bin/lipkit bench tiny
	$(VENV)/bin/lipkit bench vit-b-32 --rounds 5

# The theory lab's figures and JSON in docs/theory/ (docs/theory.md shows them): < 2 min CPU.
theory-docs: $(STAMP)
	$(VENV)/bin/lipkit theory all --out docs/theory

# The paper-claims grid and docs/results.md (rerun to resume): 252 runs, both recipes (the strong one
# at batch 256 only); the page states the wall time it took.
results: $(STAMP) cairo wordnet
	$(VENV)/bin/lipkit experiment experiments/paper-claims.yaml --out runs/paper-claims --page docs/results.md

# SLIP, SwALIP and the strong recipe against CLIP (24 runs) and docs/results-recipes.md.
recipes: $(STAMP) wordnet
	$(VENV)/bin/lipkit experiment experiments/recipes.yaml --out runs/recipes --page docs/results-recipes.md

# Attention localisation and prototype purity of CLIP, nCLIP and xCLIP ViTs (9 runs) and docs/results-emergent.md.
emergent: $(STAMP) cairo
	$(VENV)/bin/lipkit experiment experiments/emergent.yaml --out runs/emergent --page docs/results-emergent.md

# SIGKILL at 20 random moments of a training run (steps and checkpoint writes), each resumed and
# compared bitwise with an uninterrupted run; damaged checkpoints, a full disk, read-only folders;
# then bad input as a user gives it (benchmarks/faults_cases.py: what they see, what was kept).
# Writes docs/reliability.md. `make test` runs a 3-point version (tests/test_fault_injection.py);
# `$(PY) benchmarks/faults.py --cases-only --out docs/reliability.md` reruns only the bad input.
faults: $(STAMP)
	$(PY) benchmarks/faults.py --out docs/reliability.md

# The documentation site (mkdocs.yml) into site/: MkDocs, Material and mkdocstrings in their own
# environment, every package pinned in requirements-docs.txt (the `docs` extra names the top-level ones).
# It builds offline and in strict mode: a broken internal link or anchor, a missing API object or a
# page left out of the navigation fails. The API pages read src/ statically: no torch is imported.
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.lipkit-docs-installed

$(DOCS_STAMP): requirements-docs.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-docs.txt
	$(DOCS_VENV)/bin/python -m pip check
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(PEER) $(DOCS_VENV) site runs .pytest_cache
