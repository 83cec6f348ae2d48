#!/bin/sh
# The compose `exporter` service (and the Kubernetes engine-build Job): make the GPU model
# repository, building the TensorRT FP16 engine only when it is missing or stale.
#
#   ASPECTS_CHECKPOINT   checkpoint path (e.g. /checkpoints/model.ckpt), "demo" (weights trained
#                        on synthetic phantoms, in the image; not for clinical use) or
#                        "untrained" (seeded random weights)
#   ASPECTS_DEMO_WEIGHTS the "demo" weights file (default: the one in the image)
#   ASPECTS_ONNX_DIR     where the three ONNX graphs are kept (default /build/onnx); exported
#                        from the checkpoint when missing or when the checkpoint changed
#   ASPECTS_ENGINE_DIR   where unet.plan and its cache key unet.plan.json live (default
#                        /build/engines/default; the Job: one directory per GPU type)
#   ASPECTS_BUILD_ENGINE 1 (default): TensorRT engine; 0: onnxruntime fallback only
#   ASPECTS_REPOSITORY   output model repository (default /models)
#   ASPECTS_PUBLISH_STORE optional release store (s3://bucket/prefix, or a directory): the
#                        repository is published there as a NEW immutable release (the Job;
#                        compose: /releases); its id is printed last
#   ASPECTS_RELEASE_ID_FILE optional file that receives the release id (the Job: its
#                        termination message, /dev/termination-log)
#   TRITON_RELEASE       the NGC release that will serve it (default 24.10): a TensorRT
#                        engine built by another TensorRT is refused before publishing
set -eu

CKPT="${ASPECTS_CHECKPOINT:-demo}"
ONNX_DIR="${ASPECTS_ONNX_DIR:-/build/onnx}"
ENGINE_DIR="${ASPECTS_ENGINE_DIR:-/build/engines/default}"
REPO="${ASPECTS_REPOSITORY:-/models}"
say() { echo "aspects-exporter: $*" >&2; }

mkdir -p "$ONNX_DIR" "$ENGINE_DIR"
if [ "$CKPT" = "untrained" ]; then
  stamp="untrained"
elif [ "$CKPT" = "demo" ]; then
  demo="${ASPECTS_DEMO_WEIGHTS:-/opt/aspects/models/demo/aspects-unet-effb3-synth.safetensors}"
  [ -f "$demo" ] || { say "demo weights $demo are missing from the image"; exit 66; }
  stamp="demo-$(sha256sum "$demo" | cut -d' ' -f1)"
else
  [ -f "$CKPT" ] || { say "checkpoint $CKPT does not exist (mount it under /checkpoints)"; exit 66; }
  stamp="$(sha256sum "$CKPT" | cut -d' ' -f1)"
fi
if [ ! -f "$ONNX_DIR/unet.onnx" ] || [ ! -f "$ONNX_DIR/preprocess.onnx" ] \
   || [ ! -f "$ONNX_DIR/postprocess.onnx" ] \
   || [ "$(cat "$ONNX_DIR/.checkpoint" 2>/dev/null || true)" != "$stamp" ]; then
  say "exporting ONNX from checkpoint $CKPT"
  aspects-export onnx --checkpoint "$CKPT" -o "$ONNX_DIR"
  printf '%s\n' "$stamp" > "$ONNX_DIR/.checkpoint"
else
  say "ONNX graphs in $ONNX_DIR match the checkpoint; not re-exported"
fi

if [ "${ASPECTS_BUILD_ENGINE:-1}" = "1" ]; then
  # Reuses $ENGINE_DIR/unet.plan while its key (ONNX sha256, GPU, TensorRT) matches.
  aspects-export tensorrt --onnx "$ONNX_DIR/unet.onnx" -o "$ENGINE_DIR"
  aspects-export repository --onnx-dir "$ONNX_DIR" -o "$REPO" --layout gpu \
    --engine "$ENGINE_DIR/unet.plan"
else
  say "ASPECTS_BUILD_ENGINE=0: onnxruntime fallback only (start Triton with"
  say "--model-config-name=onnxruntime)"
  aspects-export repository --onnx-dir "$ONNX_DIR" -o "$REPO" --layout gpu
fi

if [ -n "${ASPECTS_PUBLISH_STORE:-}" ]; then
  say "publishing $REPO as a new release in $ASPECTS_PUBLISH_STORE"
  id_file="${TMPDIR:-/tmp}/aspects-release-id"
  aspects-export release publish --repository "$REPO" --store "$ASPECTS_PUBLISH_STORE" \
    --triton-release "${TRITON_RELEASE:-24.10}" > "$id_file"
  release_id="$(cat "$id_file")"
  if [ -n "${ASPECTS_RELEASE_ID_FILE:-}" ]; then
    printf '%s\n' "$release_id" > "$ASPECTS_RELEASE_ID_FILE"
  fi
  say "model repository ready in $REPO; published as release:"
  printf '%s\n' "$release_id"
else
  say "model repository ready in $REPO"
fi
