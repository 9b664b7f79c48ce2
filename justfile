# A3S Event development commands. `just` lists them.

default:
    @just --list

# Build every crate with every feature
build:
    cargo build --workspace --all-features

# Run all tests (the README's command, which CI runs); NATS tests start their own nats-server
test:
    cargo nextest run --workspace --all-features && cargo test --workspace --all-features --doc

# One test by name
test-one NAME:
    cargo test --workspace --all-features {{NAME}} -- --nocapture

# The NATS provider's tests; fail instead of skipping without nats-server
test-nats:
    A3S_REQUIRE_NATS=1 cargo test -p event-nats --all-features

# The memory provider's tests, including the conformance suite
test-memory:
    cargo test -p event-memory

# Criterion benchmarks (all, or one bench target of any crate)
bench TARGET="":
    cargo bench --workspace --all-features {{ if TARGET == "" { "" } else { "--bench " + TARGET } }}

# Every benchmark once, unmeasured (what CI runs to keep the benches working)
bench-smoke:
    cargo test --workspace --all-features --bench '*'

# Clippy with warnings as errors
lint:
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# Format the code
fmt:
    cargo fmt --all

# What CI runs
ci:
    bash .ci/run

# Build the docs (warnings are errors) and open them
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --open

# Run the quickstart on the in-memory provider
quickstart:
    cargo run --example quickstart
