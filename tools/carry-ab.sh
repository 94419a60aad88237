#!/usr/bin/env bash
# Builds .carry/ for an A/B device call: what tools/gpu-test.sh makes from the working tree (the
# release binary `dllm` and the two test binaries), plus BASE's release binary as `dllm-base`
# (BASE: a commit, HEAD by default), built in a temporary worktree. Both binaries stripped and all
# four gzipped (tools/unpack-carry.sh unpacks them): the tracked tree (~20 MB) and the carry share
# the 64 MiB limit, which two unzipped binaries of ~16 MB each would pass. The call scripts
# (sourcing tools/device-call.sh) then run `.carry/dllm` and `.carry/dllm-base` side by side, e.g.
#   git apply some.patch && bash tools/carry-ab.sh        # patched against HEAD
#   bash tools/carry-ab.sh 262fc7b                        # the working tree against 262fc7b
# Further commits after BASE are built too, each added as `dllm-<name as given>` (stripped and
# gzipped like the rest), for calls that also time an older build, e.g. the build an issue was
# filed at:
#   bash tools/carry-ab.sh HEAD a850727                   # + .carry/dllm-a850727
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
base=$(git rev-parse --verify "${1:-HEAD}^{commit}")
extras=("${@:2}")
for name in "${extras[@]}"; do
    git rev-parse --verify -q "$name^{commit}" >/dev/null || { echo "not a commit: $name" >&2; exit 1; }
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "name it by a plain hash or tag, not '$name'" >&2; exit 1; }
done
[ -d .venv-cuda ] || { echo "no .venv-cuda here: run tools/setup-cuda.sh first" >&2; exit 1; }
wt=$(mktemp -d /tmp/dllm-base.XXXXXX)
saved=$(mktemp /tmp/dllm-base-bin.XXXXXX)
saved_extras=$(mktemp -d /tmp/dllm-extra-bins.XXXXXX)
cleanup() { git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"; rm -rf "$saved" "$saved_extras"; }
trap cleanup EXIT
git worktree add --detach "$wt" "$base" >/dev/null
# build.rs finds nvcc, libclang and the NVTX headers in the tree's .venv-cuda: this one's.
ln -s "$root/.venv-cuda" "$wt/.venv-cuda"
# A target folder of its own (kept across runs, so its dependencies build once): in this tree's,
# the base build would leave target/release/dllm its own binary, which cargo, seeing this tree's
# crate fresh, would not link again.
base_target=/tmp/dllm-target-base
(cd "$wt" && DLLM_REQUIRE_CUDA=1 CARGO_TARGET_DIR="$base_target" cargo build --release)
cp "$base_target/release/dllm" "$saved"
# The further commits in the same worktree and target folder (only the crate rebuilds).
for name in "${extras[@]}"; do
    git -C "$wt" checkout -q --detach "$name"
    (cd "$wt" && DLLM_REQUIRE_CUDA=1 CARGO_TARGET_DIR="$base_target" cargo build --release)
    cp "$base_target/release/dllm" "$saved_extras/dllm-$name"
done
bash tools/gpu-test.sh
cp "$saved" .carry/dllm-base && chmod +x .carry/dllm-base  # mktemp made it 0600
extra_bins=()
for name in "${extras[@]}"; do
    cp "$saved_extras/dllm-$name" ".carry/dllm-$name" && chmod +x ".carry/dllm-$name"
    extra_bins+=(".carry/dllm-$name")
done
strip --strip-all .carry/dllm .carry/dllm-base "${extra_bins[@]}"
gzip -f .carry/dllm .carry/dllm-base "${extra_bins[@]}" .carry/test_cuda_kernels .carry/test_model_vs_fixtures
echo "dllm: the working tree ($(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . || echo ', with changes')); dllm-base: ${base:0:12}${extras:+; also ${extras[*]}}"
ls -la .carry
du -sh .carry
