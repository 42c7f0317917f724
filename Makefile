# redisalive: `make test` installs redis-server and redis-cli (which forms
# test clusters) and iptables (for the fault-injection suite) with apt-get
# when they are missing and you are root, cross-compiles for other systems
# (make cross), runs every test with the race detector, runs the root
# module's tests again with the oldest Go that go.mod allows (make mingo),
# and runs each fuzz target briefly (make fuzz).

GO ?= go
# The library's module and the nested modules whose tests CI runs: each
# keeps its own dependencies (redsync, OpenTelemetry, Prometheus) out of the
# library's go.mod. bench/ is built by .ci/run and run by make bench.
MODULES := . internal/compat extra/redisaliveotel extra/redisaliveprom
# staticcheck is run at a pinned version through go run, so a fresh machine
# needs nothing but Go; the module proxy and checksum database vouch for it.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test race fuzz bench bench-failover lint deps build cross mingo

test: deps lint build cross race mingo fuzz

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
# Each is package:target.
FUZZ_TARGETS := .:FuzzParseURL .:FuzzNewPool .:FuzzCommandArguments ./internal/resp:FuzzReadReply
FUZZTIME ?= 10s
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; target=$${t#*:}; \
		echo "fuzzing $$target in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg || exit 1; \
	done

# The client comparison (run.sh, about 14 minutes), then the failover
# scenarios (failover.sh, about 7 minutes), which need root and the tools
# deps installs; bench-failover runs the latter alone.
bench: deps
	cd bench && ./run.sh
	cd bench && ./failover.sh

bench-failover: deps
	cd bench && ./failover.sh

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

# Build and vet the library, internal/, examples/ and cmd/ for the systems
# we do not run on: every name a file uses must exist on every GOOS, and
# test files with Linux-only helpers need build tags or _other twins. One
# GOARCH each keeps it short; our code has no GOARCH-specific files. Pass
# CROSS="windows/arm64 ..." to check others.
CROSS ?= windows/amd64 darwin/arm64 freebsd/amd64
cross:
	@for t in $(CROSS); do \
		echo "== go build and go vet for $$t"; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build ./... || exit 1; \
		GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./... || exit 1; \
	done

# Run the root module's tests with the newest patch release of the Go that
# go.mod's go line names, fetched from the module proxy, to prove that
# line: a call of a newer API fails here, not in a user's build. It runs
# in make test's environment, so under .ci/run a test that would skip for
# want of redis-server or the fault network fails instead. With -race, as
# every test run. TestFaults, the kernel-fault suite, is left to make race:
# it spends about 270 s waiting on kernel timeouts in network namespaces,
# which a different Go release does not change, and would take make test
# past the 15 minutes it keeps to; every other test, the fault-proxy and
# real-server ones included, runs here.
MINGO ?= go1.25.14
mingo:
	@floor=$$($(GO) list -m -f '{{.GoVersion}}'); \
	case "$(MINGO)" in go$${floor%.*}|go$${floor%.*}.*) ;; \
	*) echo "mingo: MINGO=$(MINGO) is not a release of go $$floor, go.mod's go line"; exit 1;; esac
	@echo "== go test with $(MINGO)"
	GOTOOLCHAIN=$(MINGO) $(GO) test -race -count=1 -timeout 15m -skip '^TestFaults$$' ./...
