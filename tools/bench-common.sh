# Shared by the benchmark scripts (sourced, not run): a scratch directory and the servers
# started in it, cleaned up on exit; a free port; waiting for a server to answer.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_up URL: polls until the server answers (a minute at most: under valgrind it starts slowly).
wait_up() { for _ in $(seq 1 600); do curl -s "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }
# build_release EXAMPLE...: the examples, then the server on its own, as users build it
# (`cargo run --release -- serve`). One build of both would turn on the dev-dependencies'
# features in every crate they share, and measure a server users never run.
build_release() {
  local examples=()
  for example in "$@"; do examples+=(--example "$example"); done
  cargo build --quiet --release "${examples[@]}"
  cargo build --quiet --release --bin tessera
}
