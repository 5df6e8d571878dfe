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

test:
	$(CARGO) test --all-targets

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

check: lint test

clean:
	$(CARGO) clean
