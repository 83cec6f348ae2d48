"""The one contract shared by export, the model repository, the client and the docs.

Pure data and tiny pure helpers only: importing this module must stay cheap (no numpy,
no torch).  Every other module reads class order, names, colours, tensor names,
normalisation constants, the intensity window, the postprocessing thresholds and the
canonical slice orientation from here.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "1.0.0"

# --- classes, in model output order -------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One ASPECTS region: its class index in the network output, key and display data."""

    index: int
    key: str
    name: str
    colour_rgb: tuple[int, int, int]


BACKGROUND_INDEX = 0
BACKGROUND_KEY = "background"

REGIONS: tuple[Region, ...] = (
    Region(1, "m1", "anterior MCA cortex", (230, 25, 75)),
    Region(2, "m2", "MCA cortex lateral to insula", (60, 180, 75)),
    Region(3, "m3", "posterior MCA cortex", (255, 225, 25)),
    Region(4, "m4", "anterior MCA, supraganglionic", (0, 130, 200)),
    Region(5, "m5", "lateral MCA, supraganglionic", (245, 130, 48)),
    Region(6, "m6", "posterior MCA, supraganglionic", (145, 30, 180)),
    Region(7, "i", "insular ribbon", (70, 240, 240)),
    Region(8, "l", "lentiform nucleus", (240, 50, 230)),
    Region(9, "c", "caudate", (210, 245, 60)),
    Region(10, "ic", "internal capsule", (250, 190, 212)),
)
REGION_KEYS: tuple[str, ...] = tuple(r.key for r in REGIONS)
CLASS_KEYS: tuple[str, ...] = (BACKGROUND_KEY, *REGION_KEYS)
NUM_CLASSES = len(CLASS_KEYS)  # 11
REGION_BY_KEY: dict[str, Region] = {r.key: r for r in REGIONS}
REGION_BY_INDEX: dict[int, Region] = {r.index: r for r in REGIONS}

# --- hemispheres: always the patient's, never the image's -------------------------------

HEMISPHERE_RIGHT = "r"  # patient right: world x (RAS+) greater than the mid-sagittal plane
HEMISPHERE_LEFT = "l"  # patient left
HEMISPHERES: tuple[str, ...] = (HEMISPHERE_RIGHT, HEMISPHERE_LEFT)
# Integer codes used in hemisphere maps (uint8 arrays): 0 = no label.
HEMISPHERE_CODES: dict[str, int] = {HEMISPHERE_RIGHT: 1, HEMISPHERE_LEFT: 2}

# --- canonical slice orientation (what the model sees) ---------------------------------

CANONICAL_AXCODES: tuple[str, str, str] = ("R", "A", "S")  # nibabel RAS+, no resampling
SLICE_AXIS = 2  # axial slices along the third canonical axis (S)
# Each canonical slice s[x, y] is displayed as np.rot90(s, k=DISPLAY_ROT90_K):
# row 0 = most anterior, column 0 = patient left (the seed's np.rot90(get_fdata())).
DISPLAY_ROT90_K = 1

# --- intensity window (client side, per volume) ----------------------------------------

WINDOW_PERCENTILES: tuple[float, float] = (0.5, 99.5)  # of non-zero voxels -> 0..255
# uint8 = round-half-to-even(clip((v - lo) / (hi - lo) * 255, 0, 255)); numpy's default
# (linear) percentile method; a volume without non-zero voxels windows to all zeros;
# when hi == lo, non-zero voxels >= hi become 255 and the rest 0.

# --- network input ----------------------------------------------------------------------

NETWORK_SIZE: tuple[int, int] = (512, 512)  # (H, W)
NETWORK_CHANNELS = 3
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PIXEL_SCALE = 255.0  # uint8 -> [0, 1]
# Order of operations: uint8 [H, W] -> float32 -> resize to NETWORK_SIZE -> /PIXEL_SCALE
# -> (x - mean) / std, the same value in all 3 channels.
# Image resize: bilinear, half-pixel centres, no antialias
#   (= cv2.INTER_LINEAR on float32 = ONNX Resize linear/half_pixel = torch bilinear,
#    align_corners=False, antialias=False).
IMAGE_RESIZE = "bilinear-half-pixel"
# Label resize back to the native H x W: nearest with half-pixel centres,
#   src = floor((dst + 0.5) * in / out), computed in integers
#   (= torch "nearest-exact" = ONNX Resize nearest/half_pixel/round_prefer_ceil; NOT
#    cv2.INTER_NEAREST_EXACT, whose fixed-point maths is off by one on some rows when
#    shrinking; see aspects_client.preprocessing.nearest_indices).
LABEL_RESIZE = "nearest-half-pixel"

ENCODER_NAME = "efficientnet-b3"
ARCHITECTURE = "Unet"  # segmentation-models-pytorch

# --- postprocessing ---------------------------------------------------------------------

THRESHOLD_PROB = 0.5  # a pixel keeps its argmax class only if its probability >= this
MIN_AREA_PIXELS = 64  # at 512x512; smaller per-slice class areas become background

# --- Triton: model and tensor names ----------------------------------------------------

MAX_BATCH_SIZE = 16
ENSEMBLE_MODEL = "aspects"
PREPROCESS_MODEL = "preprocess"
UNET_MODEL = "unet"
POSTPROCESS_MODEL = "postprocess"
STEP_MODELS: tuple[str, ...] = (PREPROCESS_MODEL, UNET_MODEL, POSTPROCESS_MODEL)

INPUT_SLICES = "SLICES"  # UINT8 [N, H, W]
TENSOR_IMAGE = "IMAGE"  # FP32 [N, 3, 512, 512]
TENSOR_LOGITS = "LOGITS"  # FP32 [N, 11, 512, 512]
OUTPUT_LABELS = "LABELS"  # UINT8 [N, H, W]
OUTPUT_CONFIDENCE = "CONFIDENCE"  # FP32 [N, 11]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as Triton declares it: name, Triton dtype, dims without the batch dim."""

    name: str
    dtype: str
    dims: tuple[int, ...]


def _specs(*items: tuple[str, str, tuple[int, ...]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, d, s) for n, d, s in items)


_H, _W = NETWORK_SIZE
# model name -> (inputs, outputs); dims exclude the batch dimension; -1 = variable.
MODEL_IO: dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]] = {
    ENSEMBLE_MODEL: (
        _specs((INPUT_SLICES, "TYPE_UINT8", (-1, -1))),
        _specs(
            (OUTPUT_LABELS, "TYPE_UINT8", (-1, -1)),
            (OUTPUT_CONFIDENCE, "TYPE_FP32", (NUM_CLASSES,)),
        ),
    ),
    PREPROCESS_MODEL: (
        _specs((INPUT_SLICES, "TYPE_UINT8", (-1, -1))),
        _specs((TENSOR_IMAGE, "TYPE_FP32", (NETWORK_CHANNELS, _H, _W))),
    ),
    UNET_MODEL: (
        _specs((TENSOR_IMAGE, "TYPE_FP32", (NETWORK_CHANNELS, _H, _W))),
        _specs((TENSOR_LOGITS, "TYPE_FP32", (NUM_CLASSES, _H, _W))),
    ),
    POSTPROCESS_MODEL: (
        _specs(
            (TENSOR_LOGITS, "TYPE_FP32", (NUM_CLASSES, _H, _W)),
            (INPUT_SLICES, "TYPE_UINT8", (-1, -1)),
        ),
        _specs(
            (OUTPUT_LABELS, "TYPE_UINT8", (-1, -1)),
            (OUTPUT_CONFIDENCE, "TYPE_FP32", (NUM_CLASSES,)),
        ),
    ),
}

# --- volume validation bounds -----------------------------------------------------------

MAX_VOXELS = 256 * 1024 * 1024  # refuse volumes with more voxels than this
MAX_DECOMPRESSED_BYTES = 2 * 1024**3  # hard cap on what a gzip stream may inflate to
VOXEL_SIZE_RANGE_MM: tuple[float, float] = (0.05, 20.0)  # sane voxel edge lengths
