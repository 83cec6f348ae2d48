"""``aspects`` command line: one readable error line on stderr, exit 1 (runtime) / 2 (usage).

Subcommands:
  segment     segment volumes (s3:// URLs or files) through Triton -> contours JSON (+ more)
  contours    contours JSON (+ label map, overlay) from a volume and a label map in its grid
  serve-local start the local CPU Triton (nvidia-pytriton's tritonserver) until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import AspectsError
from .storage import DEFAULT_MAX_OBJECT_BYTES

PROG = "aspects"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("segment", help="segment volumes through the Triton ensemble")
    g.add_argument("sources", nargs="+", metavar="SOURCE", help="s3://bucket/key or a file")
    g.add_argument(
        "-o",
        "--output",
        required=True,
        help="JSON file (one source) or directory (several sources, or a path ending in /)",
    )
    g.add_argument("--labels", action="store_true", help="also write the label map .nii.gz")
    g.add_argument("--overlay", action="store_true", help="also write an overlay PNG")
    g.add_argument(
        "--url",
        default=os.environ.get("ASPECTS_TRITON_URL", "127.0.0.1:8001"),
        help="Triton gRPC host:port (env ASPECTS_TRITON_URL; default %(default)s)",
    )
    g.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
    g.add_argument("--region", default=None, help="S3 region (default: boto3's chain)")
    g.add_argument("--profile", default=None, help="AWS profile (default: boto3's chain)")
    g.add_argument("--max-object-bytes", type=int, default=DEFAULT_MAX_OBJECT_BYTES)
    g.add_argument("--volume-index", type=int, default=None, help="volume of a 4D series")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--retries", type=int, default=4, help="retries on UNAVAILABLE/overload")
    g.add_argument("--tls", action="store_true", help="gRPC over TLS")
    g.add_argument("--root-certificates", help="PEM CA bundle for --tls")
    g.add_argument("--concurrency", type=int, default=4, help="volumes in flight at once")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=_cmd_segment)

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


def warn_qc(source: str, qc: dict) -> None:
    """One stderr line per result whose quality control failed (the exit code stays 0:
    the outputs are written; the line says what to review)."""
    if not qc.get("passed", True):
        flags = "; ".join(qc.get("flags", []))
        print(f"{PROG}: warning: {source}: QC failed, review: {one_line(flags)}", file=sys.stderr)


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


def output_paths(sources: Sequence[str], output: str) -> list[tuple[Path, Path, Path]]:
    """(json, labels, overlay) paths per source: a file for one source, else a directory."""
    out = Path(output)
    as_dir = len(sources) > 1 or output.endswith("/") or out.is_dir()
    paths = []
    for src in sources:
        base = out / _stem(src) if as_dir else out.with_suffix("")
        paths.append(
            (
                base.with_name(base.name + ".json"),
                base.with_name(base.name + "_labels.nii.gz"),
                base.with_name(base.name + "_overlay.png"),
            )
        )
    if len({p[0] for p in paths}) != len(paths):
        raise AspectsError("two sources have the same file name; segment them separately")
    return paths


def _stem(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".nii.gz", ".nii", ".gz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _cmd_segment(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from .client import AspectsClient
    from .inference import InferenceSettings
    from .storage import S3Settings

    if args.concurrency < 1:
        print(f"{PROG}: error: --concurrency must be >= 1", file=sys.stderr)
        return 2
    paths = output_paths(args.sources, args.output)
    settings = InferenceSettings(
        timeout_s=args.timeout,
        retries=args.retries,
        ssl=args.tls,
        root_certificates=args.root_certificates,
    )
    s3 = S3Settings(
        endpoint_url=args.endpoint_url,
        region_name=args.region,
        profile_name=args.profile,
        max_object_bytes=args.max_object_bytes,
    )
    t0 = time.perf_counter()
    failures = 0
    total = len(args.sources)
    with AspectsClient(args.url, s3=s3, inference=settings, overlay=args.overlay) as client:

        def one(index: int) -> float:
            t = time.perf_counter()
            result = client.segment(args.sources[index], volume_index=args.volume_index)
            json_path, labels_path, overlay_path = paths[index]
            write_atomic(json_path, result.contours_json().encode())
            if args.labels:
                write_atomic(labels_path, result.label_map_bytes())
            if args.overlay and result.overlay_png:
                write_atomic(overlay_path, result.overlay_png)
            warn_qc(result.source, result.qc)
            return time.perf_counter() - t

        with ThreadPoolExecutor(max_workers=min(args.concurrency, total)) as pool:
            futures = {pool.submit(one, i): i for i in range(total)}
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                try:
                    seconds = future.result()
                    status = f"ok {seconds:.1f} s -> {paths[i][0]}"
                except AspectsError as exc:
                    failures += 1
                    print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
                    status = "FAILED"
                except Exception as exc:  # a bug, not bad input: still one line, go on
                    failures += 1
                    print(
                        f"{PROG}: error: {args.sources[i]}: unexpected "
                        f"{type(exc).__name__}: {one_line(str(exc))}",
                        file=sys.stderr,
                    )
                    status = "FAILED"
                if not args.quiet and total > 1:
                    print(f"{_bar(done, total)} {args.sources[i]}: {status}", file=sys.stderr)
    if not args.quiet:
        ok = total - failures
        print(f"{ok}/{total} segmented in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 1 if failures else 0


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _cmd_contours(args: argparse.Namespace) -> int:
    import numpy as np

    from . import contract
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
    values = labels_vol.data
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise InvalidVolumeError(f"{args.labels}: label values must be whole numbers")
    if values.size and (values.min() < 0 or values.max() >= contract.NUM_CLASSES):
        raise InvalidVolumeError(
            f"{args.labels}: label values must be class indices 0..{contract.NUM_CLASSES - 1} "
            f"({', '.join(contract.CLASS_KEYS)})"
        )
    prepared = prepare(volume)
    labels = np.ascontiguousarray(to_display(values, prepared.geometry)).astype(np.uint8)
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
    warn_qc(volume.source, result.document["qc"])
    print(f"wrote {args.output} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def _cmd_serve_local(args: argparse.Namespace) -> int:
    from .local_triton import run_serve_local

    return run_serve_local(args)


if __name__ == "__main__":
    sys.exit(main())
