"""``aspects`` command line: one readable error line on stderr, exit 1 (runtime) / 2 (usage).

Subcommands:
  contours    contours JSON (+ label map, overlay) from a volume and a label map in its grid
  serve-local start the local CPU Triton (nvidia-pytriton's tritonserver) until Ctrl-C
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import AspectsError

PROG = "aspects"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("contours", help="contours JSON from a volume + a label map in its grid")
    c.add_argument("volume", help="DWI volume (.nii/.nii.gz)")
    c.add_argument("--labels", required=True, help="label map (.nii/.nii.gz), same grid")
    c.add_argument("-o", "--output", required=True, help="contours JSON to write")
    c.add_argument("--label-map", help="also write the label map NIfTI (source grid)")
    c.add_argument("--overlay", help="also write an overlay PNG")
    c.add_argument("--volume-index", type=int, default=None, help="volume of a 4D series")
    c.set_defaults(func=_cmd_contours)

    s = sub.add_parser("serve-local", help="run the local CPU Triton until Ctrl-C")
    from .local_triton import add_serve_local_arguments

    add_serve_local_arguments(s)
    s.set_defaults(func=_cmd_serve_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AspectsError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied on the output, ...
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1


def one_line(text: str) -> str:
    return " ".join(text.split())


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes next to the target then rename, so a failure leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cmd_contours(args: argparse.Namespace) -> int:
    import numpy as np

    from .assemble import assemble
    from .document import dumps
    from .errors import InvalidVolumeError
    from .geometry import to_display
    from .labelmap import label_map_bytes
    from .slicing import prepare
    from .volume_io import load_volume

    t0 = time.perf_counter()
    volume = load_volume(args.volume, volume_index=args.volume_index)
    labels_vol = load_volume(args.labels)
    if labels_vol.shape != volume.shape or not np.allclose(
        labels_vol.affine, volume.affine, atol=1e-3
    ):
        raise InvalidVolumeError(
            f"{args.labels}: grid {labels_vol.shape} does not match the volume's "
            f"{volume.shape} (shape and affine must be identical)"
        )
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(labels_vol.data, prepared.geometry)).astype(
        np.uint8
    )
    result = assemble(
        volume,
        prepared,
        labels,
        overlay=bool(args.overlay),
        provenance={"labels_source": str(args.labels), "tool": "aspects contours"},
    )
    write_atomic(args.output, dumps(result.document).encode())
    if args.label_map:
        write_atomic(args.label_map, label_map_bytes(result.label_image))
    if args.overlay and result.overlay_png:
        write_atomic(args.overlay, result.overlay_png)
    print(f"wrote {args.output} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def _cmd_serve_local(args: argparse.Namespace) -> int:
    from .local_triton import run_serve_local

    return run_serve_local(args)


if __name__ == "__main__":
    sys.exit(main())
