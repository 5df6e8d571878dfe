# ptchat: the commands a newcomer needs. `make run` starts a server on 8081, `make test`
# runs every test. `make check` is the one gate before a commit.

PORT ?= 8081
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo

.PHONY: build release run test fmt lint check bench bench-compare static install clean

build:
	$(CARGO) build

release:
	$(CARGO) build --release

run: release
	./target/release/chat_server $(PORT)

# The benchmark (docs/PERFORMANCE.md). Not part of `make test`: it takes minutes and wants
# the machine to itself. The scale scenario needs one descriptor per client in the bench and
# in the server, so the soft `ulimit -n` is raised to the hard limit first.
BENCH_JSON ?= target/bench/results.json

bench: release
	ulimit -n $$(ulimit -Hn) 2>/dev/null; ./target/release/chat_bench --json $(BENCH_JSON)

# bench-compare runs every scenario against ptchat, `ncat --chat` and ngircd (an IRC daemon;
# Debian installs it in /usr/sbin), installing the two if they are missing. It changes no
# sysctl: the figures are for the machine's settings as they are, which the bench prints.
bench-compare: release
	command -v ncat >/dev/null || (apt-get update && apt-get install -y ncat)
	test -x /usr/sbin/ngircd || command -v ngircd >/dev/null || (apt-get update && apt-get install -y ngircd)
	ulimit -n $$(ulimit -Hn) 2>/dev/null; ./target/release/chat_bench --compare --json target/bench/compare.json

test:
	$(CARGO) test --all-targets

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

check: lint test

# The binary to copy onto a server: glibc's crt-static gives a self-contained executable
# (`file`: static-pie linked). --target keeps build scripts and proc-macros dynamic; the
# output lands in its own target/<triple>/ directory and is copied to target/static/.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC_BIN := target/static/chat_server
SOURCES := Cargo.toml Cargo.lock $(shell find src -name '*.rs')

static: $(STATIC_BIN)

$(STATIC_BIN): $(SOURCES)
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --target $(HOST_TRIPLE) --bin chat_server
	mkdir -p $(@D)
	cp target/$(HOST_TRIPLE)/release/chat_server $@

# Installs the static binary and the systemd unit, whose ExecStart is rewritten to match
# PREFIX. $(PREFIX)/lib/systemd/system is on systemd's unit path for /usr and /usr/local.
# Build first as yourself (`make static`), then `sudo make install` finds nothing to build.
UNITDIR ?= $(PREFIX)/lib/systemd/system

install: $(STATIC_BIN)
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	install -m 0755 $(STATIC_BIN) $(DESTDIR)$(PREFIX)/bin/chat_server
	sed 's|/usr/local/bin/chat_server|$(PREFIX)/bin/chat_server|' docs/chat_server.service \
		> $(DESTDIR)$(UNITDIR)/chat_server.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/chat_server.service

clean:
	$(CARGO) clean
