"""``aspects`` command line.

Subcommands:
  segment     segment volumes (s3:// URLs or files) through Triton -> contours JSON (+ more)
  contours    contours JSON (+ label map, overlay) from a volume and a label map in its grid

(The local CPU Triton and the demo are the dev kit's: ``aspects-dev serve-local | demo``.)

Exit codes (docs/errors.md): 0 ok; 1 a source failed (one readable line each); 2 bad usage,
refused before any work (invalid option, an output that is an input or exists); 130 Ctrl-C,
143 SIGTERM: in-flight requests are cancelled and nothing partial is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__, contract, rooms
from .commands import cmd_contours, cmd_segment
from .errors import AspectsError, UsageError
from .inference import MAX_RETRIES, InferenceSettings
from .logs import configure_logging, redact  # noqa: F401  (redact: the CLI's public name)
from .outputs import discard_all_temps
from .storage import DEFAULT_MAX_OBJECT_BYTES
from .terminal import EXIT_FAILED, EXIT_USAGE, PROG, one_line
from .validators import int_problem, number_problem, seconds_problem

DEFAULTS = InferenceSettings()  # the CLI's defaults are the settings class's
MAX_CONCURRENCY = 64
_signalled: list[int] = []  # the signal that stopped the run (SIGINT or SIGTERM)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on ONE stderr line and exits 2."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}{hint}\n")


# --- option types: validated at the edge, exit 2 ----------------------------------------


def _typed(problem: Callable[[Any], str | None]) -> Callable[[str], float]:
    """An argparse type: a number checked by ``validators`` (a bad one is exit 2)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        found = problem(value)
        if found is not None:
            raise argparse.ArgumentTypeError(f"{found}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


positive_seconds = _typed(seconds_problem)
positive_number = _typed(number_problem)
non_negative_seconds = _typed(lambda v: seconds_problem(v, positive=False))


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        found = int_problem(value, lo, hi)
        if found is not None:
            raise argparse.ArgumentTypeError(f"{found}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def triton_url(text: str) -> str:
    """``host:port`` (IPv6 as ``[addr]:port``), port 1..65535."""
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"must be host:port without a scheme (gRPC, not a URL), got {text!r}; e.g. "
            "triton:8001 (add --tls for TLS)"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not host or host in ("[]",):
        raise argparse.ArgumentTypeError(f"must be host:port, got {text!r}")
    int_in(1, 65535)(port)
    return text


# --- the parser ---------------------------------------------------------------------------


def _destination(text: str) -> Any:
    """``AE@host:port`` -> DicomNode (argparse type: a bad value is a usage error)."""
    try:
        return rooms.enter("dicom", "parse_destination")(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} (aspects_client)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    g = sub.add_parser("segment", help="segment volumes through the Triton ensemble")
    _add_source_arguments(g)
    _add_server_arguments(g)
    _add_score_arguments(g)
    _add_dicom_output_arguments(g)
    g.set_defaults(func=cmd_segment)

    c = sub.add_parser("contours", help="contours JSON from a volume + a label map in its grid")
    c.add_argument("volume", help="DWI volume (.nii/.nii.gz)")
    c.add_argument("label_input", metavar="LABELS", help="label map (.nii/.nii.gz), same grid")
    _add_output_arguments(c, "contours JSON file to write")
    c.set_defaults(func=cmd_contours)

    return parser


def _add_source_arguments(g: argparse.ArgumentParser) -> None:
    """SOURCEs, --dicom-files, --series and the output vocabulary."""
    g.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="s3://bucket/key or a NIfTI file; or DICOM: a folder, a .zip or s3://bucket/prefix/",
    )
    g.add_argument(  # DICOM input (issue 16)
        "--dicom-files",
        nargs="+",
        default=None,
        metavar="FILE",
        help="one more source: these DICOM files together (the DWI and ADC series)",
    )
    g.add_argument(
        "--series",
        default=None,
        metavar="NUMBER_OR_UID",
        help="the DWI series of a DICOM source when several qualify (SeriesNumber or UID)",
    )
    _add_output_arguments(g, "contours JSON file (one source) or directory/ (several sources)")


def _add_server_arguments(g: argparse.ArgumentParser) -> None:
    """Triton and S3: where, how long, how hard to retry; concurrency and progress."""
    g.add_argument(
        "--url",
        type=triton_url,
        default=os.environ.get("ASPECTS_TRITON_URL", "127.0.0.1:8001"),
        help="Triton gRPC host:port (env ASPECTS_TRITON_URL; default %(default)s)",
    )
    g.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
    g.add_argument("--region", default=None, help="S3 region (default: boto3's chain)")
    g.add_argument("--profile", default=None, help="AWS profile (default: boto3's chain)")
    g.add_argument(
        "--max-object-bytes", type=int_in(1), default=DEFAULT_MAX_OBJECT_BYTES, metavar="N"
    )
    g.add_argument(
        "--timeout", type=positive_seconds, default=DEFAULTS.timeout_s, help="seconds per request"
    )
    g.add_argument(
        "--deadline",
        type=positive_seconds,
        default=DEFAULTS.deadline_s,
        help="seconds per volume, counted from its start: download, DICOM reading and "
        "inference (default %(default)s)",
    )
    g.add_argument(
        "--retries",
        type=int_in(0, MAX_RETRIES),
        default=DEFAULTS.retries,
        help="retries on UNAVAILABLE/overload",
    )
    g.add_argument(
        "--wait", type=non_negative_seconds, default=0.0, help="seconds to wait for a ready server"
    )
    g.add_argument(  # priority (issue 15): contract.TRITON_PRIORITY
        "--priority",
        choices=tuple(contract.TRITON_PRIORITY),
        default=DEFAULTS.priority,
        help="urgent: served before batch requests in every queue (default %(default)s)",
    )
    g.add_argument("--tls", action="store_true", help="gRPC over TLS")
    g.add_argument("--root-certificates", help="PEM CA bundle for --tls")
    g.add_argument(
        "--concurrency", type=int_in(1, MAX_CONCURRENCY), default=4, help="volumes in flight"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _add_score_arguments(g: argparse.ArgumentParser) -> None:
    """The ASPECTS score: --score, --adc, --adc-scale, --lesion."""
    g.add_argument(
        "--score",
        action="store_true",
        help="also the lesion map, region involvement and the ASPECTS score (docs/scoring.md)",
    )
    g.add_argument(
        "--adc",
        action="append",
        default=None,
        metavar="ADC",
        help="ADC map of the same patient (s3://, a file, or a DICOM folder/zip/prefix; implies "
        "--score); repeat once per SOURCE, in the same order (a DICOM SOURCE's own ADC series "
        "is used without it)",
    )
    g.add_argument(
        "--adc-scale",
        type=positive_number,
        default=None,
        metavar="F",
        help="factor from the ADC's stored values to 10^-6 mm^2/s (default: detected)",
    )
    g.add_argument(
        "--lesion",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write the lesion map .nii.gz (1 = lesion; implies --score; --lesion=PATH)",
    )


def _add_dicom_output_arguments(g: argparse.ArgumentParser) -> None:
    """DICOM SEG / SR / secondary capture and C-STORE."""
    d = g.add_argument_group("DICOM outputs (a DICOM SOURCE only; docs/dicom.md)")
    for flag, what in (
        ("--seg", "a DICOM SEG of the 20 region x hemisphere segments (<name>_seg.dcm)"),
        ("--report", "the ASPECTS result as a DICOM structured report (<name>_report.dcm; "
         "implies --score and --seg)"),
        ("--capture", "the overlay as a DICOM secondary capture (<name>_overlay.dcm)"),
    ):
        d.add_argument(flag, nargs="?", const=True, default=False, metavar="PATH", help=what)
    d.add_argument(
        "--send",
        type=_destination,
        default=None,
        metavar="AE@HOST:PORT",
        help="C-STORE the DICOM outputs (the SEG, plus the report when scoring and the capture "
        "when asked) to this DICOM node after writing the files",
    )
    d.add_argument(
        "--calling-ae", default="ASPECTS", metavar="AE", help="our AE title (default %(default)s)"
    )


def _add_output_arguments(p: argparse.ArgumentParser, output_help: str) -> None:
    """The one output vocabulary of ``segment`` and ``contours``."""
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument(
        "--labels",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write the label map .nii.gz (default name: beside -o; --labels=PATH)",
    )
    p.add_argument(
        "--overlay",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="also write an overlay PNG (default name: beside -o; --overlay=PATH)",
    )
    p.add_argument(
        "--viewer",
        action="store_true",
        help="also write the region x hemisphere label map (20 labels) with a 3D Slicer colour "
        "table, an ITK-SNAP label file and a TSV, beside -o (<name>_regions.*)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--name",
        default=None,
        help="what the results record as the source's name (one source; default: the file "
        "name without directories or S3 prefix)",
    )
    p.add_argument(
        "--volume-index", type=int_in(0), default=None, help="volume of a 4D series (0-based)"
    )


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no gRPC C-core lines on our stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    _signalled.clear()
    previous = _install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        signum = _signalled[0] if _signalled else signal.SIGINT
        discard_all_temps()
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        print(f"{PROG}: {name}; nothing partial was written", file=sys.stderr)
        return 128 + int(signum)
    except UsageError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except AspectsError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # disk full, permission denied, ... outside a source's outputs
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _restore_signal_handlers(previous)


def _on_signal(signum: int, _frame: object) -> None:
    if not _signalled:
        _signalled.append(signum)
    raise KeyboardInterrupt


def _install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM stop the run the same way (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
