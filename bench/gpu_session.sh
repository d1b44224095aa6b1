#!/usr/bin/env bash
# The GPU measurements of the automatic plan in one run, for a lent GPU with a time limit:
#
#   1. bench/calibrate_cost.py   the SD 1.5 UNet's calls on this GPU, fitted and written as a cost model
#   2. bench/bench_auto_plan.py  the automatic choice beside a measured sweep at 1024², 2048², 3840x2160
#   3. bench/bench_peers_gpu.py  this engine beside the UNet alone, mixdiff 1.1.5 and diffusers' panorama
#   4. bench/bench_upscale_gpu.py the 512x288 -> 3840x2160 upscale with "auto" tiles in an 8 GiB cap,
#                                 the tiled VAE recomputing its passes (64 px tiles), then as the
#                                 WebUI runs it (--vae-auto: tile and device stash within the budget)
#   5. (vae-plain) the same 4K upscale with no cap, the plain encode and decode beside the tiled ones
#                                 (the reference of "at most 2x the plain decode")
#
# Steps by name (calibrate auto-plan peers upscale vae-plain; default all): a device command may
# run 10 minutes, so run it as two, e.g. `bash bench/gpu_session.sh calibrate auto-plan` (about
# 6 min) and `bash bench/gpu_session.sh peers upscale vae-plain` (at most 9.5 min).
#
# Each step has its own time limit and its output goes to $OUT (default ./out/gpu-session), the new
# cost model too, so a step that runs out of time leaves the others' figures. The peers' packages
# (mixdiff, transformers, tokenizers: no registry on the GPU machine) are installed from wheels
# carried in out/peer-wheels when they are there:
#
#   pip download --no-deps -d out/peer-wheels mixdiff==1.1.5 transformers tokenizers   # before, here
#   bash bench/gpu_session.sh                                                          # there
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
GPU="$($PY -c 'import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())' 2>/dev/null || echo gpu)"
NAME="sd15-fp16-sdpa-$GPU"

step() {  # step NAME SECONDS COMMAND...: run it with a limit, its output in $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s): $*"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "   exit $? after $SECONDS s in all; $(tail -n 1 "$OUT/$name.txt")"
}

if ls out/peer-wheels/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-deps --target /tmp/peers_pkg out/peer-wheels/*.whl > "$OUT/peers-install.txt" 2>&1
fi
STEPS="${*:-calibrate auto-plan peers upscale vae-plain}"
wants() { [[ " $STEPS " == *" $1 "* ]]; }
if wants calibrate; then
    step calibrate 120 $PY bench/calibrate_cost.py --device cuda --dtype fp16 --name "$NAME" --write
    cp "lib_mixture/costs/$NAME.json" "$OUT/" 2>/dev/null
fi
if wants auto-plan; then
    cost=""  # this GPU's own model where the calibration wrote one
    [ -f "lib_mixture/costs/$NAME.json" ] && cost="--cost $NAME"
    # shellcheck disable=SC2086
    step auto-plan 230 $PY bench/bench_auto_plan.py --device cuda --dtype fp16 --steps 2 --batches 1,2,4,8,16,32,64 $cost
fi
if wants peers; then
    step peers 170 $PY bench/bench_peers_gpu.py --device cuda --dtype fp16 --steps 2 --peers /tmp/peers_pkg
fi
if wants upscale; then
    for stash in "--vae-tile 64" "--vae-auto"; do
        name="upscale-8gib${stash:+-${stash#--}}"
        name="${name// /-}"
        # shellcheck disable=SC2086 # the stash options are words
        step "$name" 120 $PY bench/bench_upscale_gpu.py --device cuda --dtype fp16 --sizes 3840x2160 --budget 8 \
            --tile auto --tile-batch auto --skip-plain $stash --json "$OUT/$name.json"
    done
fi
if wants vae-plain; then
    step vae-plain 150 $PY bench/bench_upscale_gpu.py --device cuda --dtype fp16 --sizes 3840x2160 \
        --tile auto --tile-batch auto --vae-auto --json "$OUT/vae-plain.json"
fi
echo "done in $SECONDS s; figures in $OUT"
