"""The one contract shared by export, the model repository, the client and the docs.

Pure data and tiny pure helpers only: importing this module must stay cheap (no numpy,
no torch).  Every other module reads class order, names, colours, tensor names,
normalisation constants, the intensity window, the postprocessing thresholds and the
canonical slice orientation from here.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "1.2.0"  # 1.1: the "qc" object; 1.2: the optional "aspects" score object
# What the network sees and gives (size, channels, normalisation, classes, thresholds).  Bump it
# with any change to those: benchmark results record it, and report.py marks a figure measured
# under another contract as stale.  1: one slice at 512x512; 2: 2.5D stacks at 256x256.
CONTRACT_VERSION = "2"

# --- what any input volume must be (NIfTI and DICOM alike; docs/errors.md) ----------------
MIN_SLICES = 3  # slices along the patient's S-I axis (2.5D stacks need a neighbour each side)
MAX_SHEAR_DEG = 30.0  # slices sheared further than this (gantry tilt) are refused

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

# Region x hemisphere labels (viewer label maps, DICOM SEG segments): 1..10 = m1..ic in the
# patient's RIGHT hemisphere, 11..20 = m1..ic in the LEFT; 0 = background.
REGION_HEMISPHERE_OFFSET: dict[str, int] = {HEMISPHERE_RIGHT: 0, HEMISPHERE_LEFT: len(REGIONS)}
NUM_REGION_HEMISPHERE_LABELS = 2 * len(REGIONS)  # 20


def region_hemisphere_label(region_index: int, hemisphere: str) -> int:
    """The 20-label value of class ``region_index`` (1..10) in ``hemisphere`` ('r'/'l')."""
    return REGION_HEMISPHERE_OFFSET[hemisphere] + region_index


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

# --- network input ---------------------------------------------------------------------

# 2.5D: each network input holds three neighbouring canonical slices, one per channel:
# (slice k-1, slice k, slice k+1) along the canonical S axis (inferior first).  At the first
# and last slice the missing neighbour is the slice itself (edge replicate).  The labels
# are those of slice k.  The client builds these stacks (it has the whole volume); the
# server sees independent UINT8 [3, H, W] items, so batches may mix volumes freely.
CONTEXT_OFFSETS: tuple[int, int, int] = (-1, 0, 1)  # channel c holds slice k + offset
NETWORK_SIZE: tuple[int, int] = (256, 256)  # (H, W); chosen by measurement (issue 11)
NETWORK_CHANNELS = len(CONTEXT_OFFSETS)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PIXEL_SCALE = 255.0  # uint8 -> [0, 1]
# Order of operations: uint8 [3, H, W] -> float32 -> resize to NETWORK_SIZE -> /PIXEL_SCALE
# -> (x - mean[c]) / std[c] for channel c.
# Image resize: bilinear, half-pixel centres, no antialias
#   (= cv2.INTER_LINEAR on float32 = ONNX Resize linear/half_pixel = torch bilinear,
#    align_corners=False, antialias=False).
# Label resize back to the native H x W: nearest with half-pixel centres,
#   src = floor((dst + 0.5) * in / out), computed in integers
#   (= torch "nearest-exact" = ONNX Resize nearest/half_pixel/round_prefer_ceil; NOT
#    cv2.INTER_NEAREST_EXACT, whose fixed-point maths is off by one on some rows when
#    shrinking; see aspects_client.server_reference.nearest_indices).

ENCODER_NAME = "efficientnet-b3"
ARCHITECTURE = "Unet"  # segmentation-models-pytorch

# --- postprocessing ---------------------------------------------------------------------

THRESHOLD_PROB = 0.5  # a pixel keeps its argmax class only if its probability >= this
MIN_AREA_PIXELS = 16  # at NETWORK_SIZE (256x256: 16 px = 64 px at 512); smaller per-slice
# class areas become background

# --- quality control (client side, on every result; aspects_client.qc) -----------------

# 1. Left/right asymmetry of each region's volume (document "summary"), patient hemispheres:
#    asymmetry = |V_r - V_l| / max(V_r, V_l), 0 when both are 0.
QC_ASYMMETRY_MAX = 0.15  # a region is flagged above this (the project's goal bound)
QC_ASYMMETRY_MIN_VOLUME_ML = 0.5  # ... only when its larger side holds at least this (mL);
# a region present on one side only (other side 0 voxels) is flagged under the same minimum.
# 2. Level consistency: ASPECTS reads the ganglionic and the supraganglionic regions on
#    different axial levels, so one slice side should not hold substantial pixels of both.
QC_GANGLIONIC_KEYS: tuple[str, ...] = ("m1", "m2", "m3", "i", "l", "c", "ic")
QC_SUPRAGANGLIONIC_KEYS: tuple[str, ...] = ("m4", "m5", "m6")
QC_LEVEL_MIN_FRACTION = 0.01  # each level's pixels >= this share of the side's labelled
QC_LEVEL_MIN_PIXELS = 20  # ... pixels in that slice, and >= this many pixels, to count
# 3. Labels outside the head.  Head mask per windowed uint8 slice: Gaussian blur, pixels
#    >= QC_HEAD_LEVEL, the largest 8-connected component, holes filled, dilated by the margin.
QC_HEAD_LEVEL = 16  # of 0..255 (the contract window): above background noise, below tissue
QC_HEAD_BLUR_PX = 5  # Gaussian kernel size (odd, pixels) against background noise
QC_HEAD_MARGIN_MM = 2.0  # labels this close to the head's edge still count as inside
QC_OUTSIDE_HEAD_MAX_FRACTION = 0.01  # flagged when more labelled pixels lie outside
# (overall; slices above the same fraction are listed for review)
# 4. Regions found at all: a result without a single labelled voxel (noise, a blank or
#    wrongly scaled image) fails QC and is never scored.
# A head whose labelled regions total more than this is refused (NotAHeadImageError): the
# whole brain is about 1.1-1.4 L, so more means wrong voxel sizes in the header.
MAX_REGIONS_ML = 1500.0

# --- Triton: model and tensor names ----------------------------------------------------

MAX_BATCH_SIZE = 16
ENSEMBLE_MODEL = "aspects"
PREPROCESS_MODEL = "preprocess"
UNET_MODEL = "unet"
POSTPROCESS_MODEL = "postprocess"
STEP_MODELS: tuple[str, ...] = (PREPROCESS_MODEL, UNET_MODEL, POSTPROCESS_MODEL)

INPUT_SLICES = "SLICES"  # UINT8 [N, 3, H, W]: 2.5D stacks (CONTEXT_OFFSETS)
TENSOR_IMAGE = "IMAGE"  # FP32 [N, 3, 256, 256]
TENSOR_LOGITS = "LOGITS"  # FP32 [N, 11, 256, 256]
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
        _specs((INPUT_SLICES, "TYPE_UINT8", (NETWORK_CHANNELS, -1, -1))),
        _specs(
            (OUTPUT_LABELS, "TYPE_UINT8", (-1, -1)),
            (OUTPUT_CONFIDENCE, "TYPE_FP32", (NUM_CLASSES,)),
        ),
    ),
    PREPROCESS_MODEL: (
        _specs((INPUT_SLICES, "TYPE_UINT8", (NETWORK_CHANNELS, -1, -1))),
        _specs((TENSOR_IMAGE, "TYPE_FP32", (NETWORK_CHANNELS, _H, _W))),
    ),
    UNET_MODEL: (
        _specs((TENSOR_IMAGE, "TYPE_FP32", (NETWORK_CHANNELS, _H, _W))),
        _specs((TENSOR_LOGITS, "TYPE_FP32", (NUM_CLASSES, _H, _W))),
    ),
    POSTPROCESS_MODEL: (
        _specs(
            (TENSOR_LOGITS, "TYPE_FP32", (NUM_CLASSES, _H, _W)),
            (INPUT_SLICES, "TYPE_UINT8", (NETWORK_CHANNELS, -1, -1)),
        ),
        _specs(
            (OUTPUT_LABELS, "TYPE_UINT8", (-1, -1)),
            (OUTPUT_CONFIDENCE, "TYPE_FP32", (NUM_CLASSES,)),
        ),
    ),
}

# --- volume validation bounds -----------------------------------------------------------

MAX_VOXELS = 64 * 1024 * 1024  # refuse volumes with more voxels than this (1024x1024x64)
MAX_INPLANE_VOXELS = 1024  # refuse slices wider or taller than this (checked from the header)
MIN_INPLANE_VOXELS = 32  # ... or narrower / shorter than this: not a head slice
MIN_INPLANE_FOV_MM = 80.0  # ... or whose field of view is smaller than this along an axis
MAX_DECOMPRESSED_BYTES = 2 * 1024**3  # hard cap on what a gzip stream may inflate to
VOXEL_SIZE_RANGE_MM: tuple[float, float] = (0.05, 20.0)  # sane voxel edge lengths

# --- lesions and the ASPECTS score (aspects_client.scoring.lesions; docs/scoring.md) -------------

ADC_UNIT = "1e-6 mm^2/s"  # every ADC value inside the client is in this unit
ADC_CORE_THRESHOLD = 620.0  # ADC below this (x 1e-6 mm^2/s) inside the brain = infarct core
ADC_TISSUE_MEDIAN_RANGE = (450.0, 1400.0)  # median ADC of the labelled regions, in ADC_UNIT,
# expected for a real ADC map; a map whose median is outside it after scale detection is
# refused (wrong units, or not an ADC map)
DWI_LESION_RATIO = 1.8  # without ADC: DWI > ratio x the homologous region's median; chosen by
# benchmarks/scoring.py (1.3, 1.5, 1.8, 2.2 on the same segmentations: best exact score)
MIN_LESION_ML = 0.05  # connected lesion components smaller than this (mL) are specks: removed
AFFECTED_MIN_FRACTION = 0.05  # a region is affected when >= this fraction of it is lesion ...
AFFECTED_MIN_ML = 0.1  # ... and the lesion in it is >= this volume (mL)
UNCERTAIN_FACTOR = 2.0  # uncertain when a quantity is within this factor of its threshold

# --- Triton scheduling: priority, bounded queues, warm-up (issue 15) --------------------
# Every step (preprocess, unet, postprocess) batches with two priority levels; the ensemble
# hands a request's priority to each step (Triton 2.51: the ensemble accepts any level and
# every step request gets it).  Level 1 is served before level 2; a request without one is
# "batch".  The client sends TRITON_PRIORITY[priority] with every request.
PRIORITY_URGENT = "urgent"  # an acute stroke read: served first
PRIORITY_BATCH = "batch"  # everything else (re-reads, research, backfill)
TRITON_PRIORITY: dict[str, int] = {PRIORITY_URGENT: 1, PRIORITY_BATCH: 2}
PRIORITY_LEVELS = len(TRITON_PRIORITY)  # dynamic_batching.priority_levels of every step
DEFAULT_PRIORITY = PRIORITY_BATCH  # dynamic_batching.default_priority_level (= its level)
# Bounded queues (dynamic_batching.default_queue_policy of every step, per priority level):
# more waiting requests are refused at once (UNAVAILABLE "Exceeds maximum queue size"), and a
# request that waited longer than the timeout in one step's queue is refused (UNAVAILABLE
# "Request timeout expired"); a request's own timeout can only shorten it.
QUEUE_MAX_REQUESTS = 128  # per step and priority level (a request holds <= MAX_BATCH_SIZE)
QUEUE_TIMEOUT_S = 30.0  # GPU deployment; the generated CPU runtime scales it (repository.py)
# model_warmup of every step: zero data at these batch sizes, so "ready" means warm.
WARMUP_BATCH_SIZES: tuple[int, ...] = (1, MAX_BATCH_SIZE)
WARMUP_NATIVE_SIZE: tuple[int, int] = (512, 512)  # (H, W) of the SLICES warm-up items
