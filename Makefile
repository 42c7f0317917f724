# redisalive: `make test` installs redis-server and redis-cli (which forms
# test clusters) and iptables (for the fault-injection suite) with apt-get
# when they are missing and you are root, then runs every test with the race
# detector and each fuzz target briefly (make fuzz).

GO ?= go
# The library's module and the nested modules whose tests CI runs: each
# keeps its own dependencies (redsync, OpenTelemetry, Prometheus) out of the
# library's go.mod. bench/ is built by .ci/run and run by make bench.
MODULES := . internal/compat extra/redisaliveotel extra/redisaliveprom
# staticcheck is run at a pinned version through go run, so a fresh machine
# needs nothing but Go; the module proxy and checksum database vouch for it.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test race fuzz bench lint deps build

test: deps lint build race fuzz

# Install what the real-server and kernel-fault tests need. Without root the
# tests that need them skip with a message saying how to run them.
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v ss >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "note: missing$$missing; tests needing them will skip (run as root to install)"; \
		fi; \
	fi

race:
	@for m in $(MODULES); do \
		echo "== go test -race in $$m"; \
		(cd $$m && $(GO) test -race -count=1 -v -timeout 15m ./...) || exit 1; \
	done

# Each fuzz target runs alone, since -fuzz takes one, for FUZZTIME. Short
# minimization keeps that time for exploring. A crasher is saved under
# testdata/fuzz/<target>/; commit it with the fix as a regression seed.
FUZZ_TARGETS := FuzzParseURL FuzzNewPool FuzzCommandArguments
FUZZTIME ?= 10s
fuzz:
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzzing $$target for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s . || exit 1; \
	done

bench:
	cd bench && ./run.sh

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do \
		echo "== vet and staticcheck in $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...) || exit 1; \
	done

# Link every program (examples/, cmd/): go vet and go test alone do not
# link a main package without tests.
build:
	$(GO) build -o /dev/null ./examples/... ./cmd/...
