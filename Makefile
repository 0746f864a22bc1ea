# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-ui test-stalwart test-deploy images lint bench clean deploy deploy-check lint-deploy wheelhouse

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv' 2>/dev/null || (apt-get update && apt-get install -y python3-venv)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/sandbox.py

lint: $(STAMP)
	$(BIN)/ruff check appliance tests bench examples
	$(BIN)/mypy appliance

# The official RFC 7208 SPF suite ships in pyspf's source distribution; fetched once from PyPI.
# Offline, the download fails quietly and those tests are skipped.
SPF_SUITE := $(VENV)/spf-suite/rfc7208-tests.yml

$(SPF_SUITE): $(STAMP)
	@mkdir -p $(VENV)/spf-suite
	@cd $(VENV)/spf-suite && ../bin/pip download -q --no-binary :all: --no-deps pyspf==2.0.14 2>/dev/null \
		&& tar xzf pyspf-2.0.14.tar.gz pyspf-2.0.14/test/rfc7208-tests.yml \
		&& mv pyspf-2.0.14/test/rfc7208-tests.yml . || echo "RFC 7208 suite not downloaded: those tests skip"

test: lint $(SPF_SUITE)
	PYSPF_TESTSUITE=$(abspath $(SPF_SUITE)) $(BIN)/pytest -q -p no:cacheprovider -n 2 -m 'not container and not deploy and not browser'

# The dashboard in a real browser: Debian's chromium (installed here when missing; never a browser
# download of Playwright's own) driven by Playwright against a running appliance. Every page a test
# visits is kept as a screenshot under build/screenshots (or $UI_SCREENSHOTS).
test-ui: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pytest -q -p no:cacheprovider -m browser

# The images the container tests run (built locally: no registry here; cached when present).
images:
	sh deploy/images/base.sh

# Stalwart mode against a real Docker Engine: the supervisor, provisioning, dispatch, end to end,
# with the stand-in image (tests/stalwart/standin).
test-stalwart: $(STAMP) images
	$(BIN)/pytest -q -p no:cacheprovider -m container

# The deployment: the appliance's image (deploy/Dockerfile over a wheelhouse of this checkout) under
# deploy/compose.yml with the stand-in as Stalwart, and the Ansible roles against a container target.
test-deploy: $(STAMP) images
	$(BIN)/pytest -q -p no:cacheprovider -m deploy

# The deployment (docs/deploy.md): `make deploy INVENTORY=ansible/inventory/mine`. The wheelhouse holds
# the appliance's wheel and every dependency's, so the VPS needs no package index.
INVENTORY ?= ansible/inventory/example
ANSIBLE_ARGS ?=
deploy deploy-check lint-deploy: export ANSIBLE_CONFIG := $(abspath ansible/ansible.cfg)

# SOURCE_DATE_EPOCH (the last commit's time) makes the wheel byte-for-byte the same for the same
# source, so a second `make deploy` copies and installs nothing.
wheelhouse: $(STAMP)
	rm -rf dist/wheelhouse
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) $(BIN)/pip wheel -q . -w dist/wheelhouse

deploy: wheelhouse
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/site.yml $(ANSIBLE_ARGS)

deploy-check: wheelhouse
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/site.yml --check --diff $(ANSIBLE_ARGS)

lint-deploy: $(STAMP)
	$(BIN)/ansible-playbook --syntax-check -i ansible/inventory/example ansible/site.yml
	$(BIN)/ansible-lint --profile production ansible/

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/outbound.py
	$(BIN)/python bench/jmap.py
	$(BIN)/python bench/jmap_push.py
	$(BIN)/python bench/stalwart.py
	$(BIN)/python bench/stalwart.py --docker

# The appliance next to Debian's Postfix and Postfix+OpenDKIM (installs them when missing; needs root).
.PHONY: bench-peer
bench-peer: $(STAMP)
	PYTHON=$(abspath $(BIN))/python sh bench/peer.sh

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
