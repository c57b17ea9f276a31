"""The ``quant-guard`` command line: checkpoint and weight tooling around the pytest plugin.

    quant-guard tiny DIR                          write the embedded tiny checkpoint
    quant-guard quantize IN OUT --dtype float8_e4m3fn | --method bitsandbytes_nf4
                                                  write a pre-quantized DiT file
    quant-guard degrade IN OUT --kind noise       write a deliberately damaged DiT (a VAE for colour-cast)
    quant-guard lpips-weights --fetch             download, convert and check the LPIPS weights
    quant-guard doctor [--full-size [--family F]] check this machine before the first nightly
    quant-guard history DIR list|compare A B|course TEST_ID|csv|report OUT
                                                  the metrics history of earlier runs
    quant-guard sweep --checkpoint ID --scheme S  which layer groups to keep in bf16 (sensitivity sweep)
                      [--groups components]       which model components to quantize
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quant_guard.store.atomic import atomic_path
from quant_guard.model.checkpoints import CheckpointError
from quant_guard.tools.degrade import Degradation
from quant_guard.store.history import History
from quant_guard.config.limits import METRICS

if TYPE_CHECKING:
    from quant_guard.model.families.base import Architecture, ModelFamily
    from quant_guard.run.session import QuantGuardSession


def _cmd_tiny(args: argparse.Namespace) -> int:
    from quant_guard.model.tiny.build import write_tiny_checkpoint

    dest: Path = args.dir
    if dest.exists() and any(dest.iterdir()):
        print(f"error: {dest} exists and is not empty", file=sys.stderr)
        return 2
    files = write_tiny_checkpoint(dest, seed=args.seed, use_shipped=not args.seeded)
    print(f"wrote the tiny checkpoint to {files.root}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from quant_guard.tools.quantize import quantize_file, quantize_file_with_method

    if args.method:
        stats = quantize_file_with_method(args.input, args.output, method=args.method, device=args.device)
        print(f"wrote {args.output}: DiffSynth's pre-quantized {args.method} file, "
              f"{stats['bytes_in']} -> {stats['bytes_out']} bytes")
        return 0
    stats = quantize_file(args.input, args.output, dtype=args.dtype)
    print(f"wrote {args.output}: {stats['cast']} of {stats['tensors']} tensors in {args.dtype}, "
          f"{stats['bytes_in']} -> {stats['bytes_out']} bytes")
    return 0


def _cmd_degrade(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from quant_guard.model.families import family
    from quant_guard.tools.degrade import degrade

    if args.input.suffix != ".safetensors":
        raise CheckpointError(f"{args.input}: only .safetensors files are read (no pickles)")
    try:
        state = load_file(str(args.input))
    except SafetensorError as exc:
        raise CheckpointError(f"{args.input}: cannot read safetensors file ({exc})") from None
    damaged = degrade(state, args.kind, seed=args.seed, block=args.block, strength=args.strength,
                      family=family(args.family))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output, suffix=".tmp.safetensors") as tmp:
        save_file(damaged, str(tmp))
    print(f"wrote {args.output} ({args.kind}, {family(args.family).label}, block {args.block}, seed {args.seed})")
    print(_degraded_use(args.output, Degradation(args.kind), family(args.family)))
    return 0


def _degraded_use(output: Path, kind: Degradation, model_family: ModelFamily) -> str:
    """How the damaged file enters the configuration, so that the gate can be seen failing."""
    quoted = json.dumps(str(output))  # a TOML basic string
    if kind is Degradation.COLOUR_CAST:
        return (f"use it as the checkpoint's VAE: components.vae = {quoted} (every scheme shares the VAE, so "
                "compare against goldens made with the undamaged one)")
    if kind is Degradation.TEXT_ENCODER_NOISE:  # the family names the component (degrade refuses it otherwise)
        component = (model_family.damage.text_encoder or ("text_encoder", ""))[0]
        return ("use it as a candidate's text encoder: schemes = [{ id = \"damaged-te\", components = { "
                f"{component} = {{ storage = \"float8_e4m3fn\", file = {quoted} }} }} }}], then run pytest: "
                "its tests should fail")
    return (f'use it as a candidate: schemes = [{{ id = "damaged", storage = "float8_e4m3fn", dit = {quoted} }}] '
            "(DiffSynth casts a bf16 file to float8 on load), then run pytest: its tests should fail")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from quant_guard.tools.doctor import DoctorError, doctor, find_config
    from quant_guard.tools.full_size import FullSizeRequest
    from quant_guard.model.pipelines import pick_device
    from quant_guard.model.families import UnknownModelFamily, default_family, family
    from quant_guard.tools.synthetic import architectures, file_bytes

    request = None
    if args.full_size:
        try:
            chosen = family(args.family) if args.family else default_family()
            arch = chosen.architecture(args.shapes) if args.shapes else chosen.full_size
        except (UnknownModelFamily, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        device = pick_device(args.device)
        if arch is not _smallest(list(architectures(chosen).values())) and device == "cpu" and args.device != "cpu":
            weights = sum(file_bytes(arch).values())
            print(f"error: --full-size needs a CUDA device ({arch.label} shapes on a CPU take hours and about "
                  f"{weights * 2 / 1e9:.0f} GB of memory); --device cpu insists, --shapes tiny runs the same code at "
                  "tiny size", file=sys.stderr)
            return 2
        width, height = args.size or (None, None)
        request = FullSizeRequest(arch, device, width=width, height=height, steps=args.steps, work_dir=args.work_dir,
                                  frames=args.frames)
    try:
        return doctor(find_config(args.qg_config, Path.cwd()), request, checkpoint_id=args.checkpoint)
    except DoctorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _smallest(sizes: list[Architecture]) -> Architecture:
    """The architecture with the fewest weights (a family's tiny: the one a CPU runs at once)."""
    from quant_guard.tools.synthetic import file_bytes

    return min(sizes, key=lambda a: sum(file_bytes(a).values()))


def _cmd_history(args: argparse.Namespace) -> int:
    from quant_guard.store import history as h
    from quant_guard.tools import history_views

    store = h.read(args.dir)
    for problem in store.skipped:
        print(f"warning: skipped {problem}", file=sys.stderr)
    if args.view == "list":
        text = history_views.list_runs(store)
    elif args.view == "compare":
        text = history_views.compare_runs(store, args.run_a, args.run_b)
    elif args.view == "course":
        text = history_views.course(store, args.test_id)
    elif args.view == "report":
        return _history_report(store, args)
    else:
        text = history_views.to_csv(store)
        if args.output is not None:
            args.output.write_text(text, encoding="utf-8")
            print(f"wrote {len(store.records)} records to {args.output}")
            return 0
    print(text.rstrip("\n"))
    return 0


def _history_report(store: History, args: argparse.Namespace) -> int:
    from quant_guard.store.atomic import atomic_write
    from quant_guard.config.limits import TrendSettings
    from quant_guard.report.html import TRENDS_NAME, render_trends
    from quant_guard.report.trends import build_trends

    if not store.records:
        print(f"error: {args.dir}: the history holds no records", file=sys.stderr)
        return 1
    settings = TrendSettings(runs=args.runs, baseline=args.baseline, metric=args.metric, top=args.top)
    trends = build_trends(store, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / TRENDS_NAME
    atomic_write(path, render_trends(trends, str(args.dir)).encode("utf-8"))
    print(f"wrote the trends of {len(trends.tests)} tests over {len(trends.runs)} runs to {path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from quant_guard.config.project import load_config
    from quant_guard.tools.doctor import find_config
    from quant_guard.store.golden import GoldenError
    from quant_guard.judge.lpips_weights import LpipsWeightsError
    from quant_guard.model.progress import ProgressPrinter
    from quant_guard.run.session import QuantGuardSession, RunSettings

    file = find_config(args.config, Path.cwd())
    if file is None:
        print("error: no quant_guard configuration: no [tool.quant_guard] in a pyproject.toml here or above; "
              "pass --config PATH", file=sys.stderr)
        return 2
    session = QuantGuardSession(load_config(file), RunSettings(report_dir=args.report_dir))
    session.progress = ProgressPrinter(lambda line: print(line, file=sys.stderr, flush=True),
                                       interval_s=args.progress_interval)
    try:
        text, code = (_sweep_components if args.groups == "components" else _sweep_layers)(session, args)
    except (GoldenError, LpipsWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        session.release_pipelines()
    print(text, end="")
    return code


def _sweep_layers(session: QuantGuardSession, args: argparse.Namespace) -> tuple[str, int]:
    """The layer-group sweep: what it prints and its exit status."""
    from quant_guard.tools.sweep import Answer
    from quant_guard.tools.sweep_outputs import sweep_checkpoint
    from quant_guard.tools.sweep_text import format_sweep

    result = sweep_checkpoint(session, args.checkpoint, args.scheme, granularity=args.granularity,
                              cases=args.case, seeds=args.seed, target_lpips=args.target_lpips,
                              target_ssim=args.target_ssim, target_psnr=args.target_psnr)
    assert result.folder is not None
    rec = result.recommendation
    return (format_sweep(result) + f"\nwrote {result.folder / 'sweep.json'} and {result.folder / 'sweep.html'}\n",
            0 if rec.confirmed and rec.answer is not Answer.NO_SUBSET else 3)


def _sweep_components(session: QuantGuardSession, args: argparse.Namespace) -> tuple[str, int]:
    """``sweep --groups components``: the ranked components and the component scheme entry."""
    from quant_guard.config.thresholds import ThresholdOverrides
    from quant_guard.tools.component_sweep import run_component_sweep, write_component_sweep
    from quant_guard.tools.sweep_text import format_component_sweep

    target = ThresholdOverrides(lpips=args.target_lpips, ssim=args.target_ssim, psnr=args.target_psnr)
    result = write_component_sweep(run_component_sweep(session, args.checkpoint, args.scheme, cases=tuple(args.case),
                                                       seeds=tuple(args.seed), target=target), session.report_dir)
    assert result.folder is not None
    return (format_component_sweep(result) + f"\nwrote {result.folder / 'sweep.json'}\n",
            0 if result.recommendation.entry is not None else 3)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x1024, got {text!r}") from None
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be positive multiples of 16")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    from quant_guard.tools.degrade import Degradation
    from quant_guard.model.layer_groups import GRANULARITIES
    from quant_guard.plugin import _bounded_float  # the plugin's --qg-psnr & co. parse the same way
    from quant_guard.model.families import default_family, families
    from quant_guard.tools.quantize import DTYPES

    family = default_family()  # the embedded tiny checkpoint's, and the one doctor --full-size builds

    parser = argparse.ArgumentParser(
        prog="quant-guard", description="Checkpoint and weight tooling around the quant_guard pytest plugin.")
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny", help=f"write the embedded tiny {family.label} checkpoint (safetensors + tokenizers)")
    tiny.add_argument("dir", type=Path, help="output folder (created; must be empty)")
    tiny.add_argument("--seeded", action="store_true", help="seeded random weights instead of the shipped trained ones")
    tiny.add_argument("--seed", type=int, default=0, help="seed for --seeded (default 0)")
    tiny.set_defaults(func=_cmd_tiny)

    quantize = sub.add_parser("quantize", help="write a pre-quantized DiT: floating tensors cast to float8, or "
                                               "quantized by a diffsynth.core.quant method")
    quantize.add_argument("input", type=Path, help="bf16 DiT .safetensors")
    quantize.add_argument("output", type=Path, help="output .safetensors")
    how = quantize.add_mutually_exclusive_group()
    how.add_argument("--dtype", choices=DTYPES, default="float8_e4m3fn")
    how.add_argument("--method", help="a diffsynth.core.quant method (e.g. bitsandbytes_nf4): DiffSynth's "
                                      "save_quantized_model writes the file a scheme loads with load_prequantized")
    quantize.add_argument("--device", default="cpu", help="where --method quantizes (default cpu)")
    quantize.set_defaults(func=_cmd_quantize)

    degrade = sub.add_parser("degrade", help="write a deliberately damaged DiT (a VAE for colour-cast), to check "
                                             "the gate catches it")
    degrade.add_argument("input", type=Path)
    degrade.add_argument("output", type=Path)
    degrade.add_argument("--kind", choices=[d.value for d in Degradation], required=True,
                         help="which tensors each kind damages comes from the model family (--family): noise and "
                              "zero-attn-out and scale act on block --block of its main block list (noise: every "
                              "weight matrix; zero-attn-out: the attention output; scale: the feed-forward input), "
                              "round on every weight matrix, drop-text zeroes its text embedders, colour-shift "
                              "offsets one latent channel of its final projection's bias (an error for a family "
                              "whose final projection has none), colour-cast one RGB output of its VAE decoder")
    degrade.add_argument("--family", choices=sorted(families()), default=family.name,
                         help=f"the model family of the file (default {family.name}, {family.label})")
    degrade.add_argument("--block", type=int, default=0,
                         help="block of the family's main block list for per-block kinds (default 0)")
    degrade.add_argument("--strength", type=float, default=None,
                         help="the kind's knob: round levels (default 3), noise fraction of the weight std "
                              "(0.75), scale factor (2), colour-shift offset (2), colour-cast offset (0.05)")
    degrade.add_argument("--seed", type=int, default=0)
    degrade.set_defaults(func=_cmd_degrade)

    doctor = sub.add_parser("doctor", help="check this machine before the first nightly: torch, CUDA, GPUs, "
                                           "DiffSynth, LPIPS weights, disk and limits of each configured checkpoint")
    doctor.add_argument("--qg-config", type=Path, default=None,
                        help="quant_guard configuration (default: as the plugin finds it, from pyproject.toml)")
    doctor.add_argument("--full-size", action="store_true",
                        help=f"also build the bf16 and float8 pipelines with random weights at --shapes of "
                             f"--family ({family.full_size.label} by default) and measure peak memory, resident "
                             "memory and step time (no download; writes the weights, tens of GiB at full size, to "
                             "--work-dir and removes them afterwards)")
    doctor.add_argument("--family", choices=tuple(sorted(families())), default=None,
                        help=f"model family of --full-size (default {family.name}); its checkpoints' memory plans "
                             "and limits apply")
    sizes = "; ".join(f"{f.name}: {', '.join(a.name for a in f.architectures)}" for f in families().values())
    doctor.add_argument("--shapes", default=None,
                        help=f"architecture size of --full-size, one of the family's (default: its full size; tiny: "
                             f"its embedded checkpoint's, for a quick check). {sizes}")
    doctor.add_argument("--checkpoint", default=None,
                        help="whose memory plan --full-size follows (default: the first real checkpoint marked gpu)")
    doctor.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    doctor.add_argument("--size", type=_size, default=None, metavar="WxH",
                        help="render size (default: the checkpoint's render size, which its limits are for, else "
                             "the family's)")
    doctor.add_argument("--steps", type=int, default=20, help="denoising steps per render (20)")
    doctor.add_argument("--frames", type=int, default=None,
                        help="a video family's clip length (default: the checkpoint's render.frames, else the family's)")
    doctor.add_argument("--work-dir", type=Path, default=None, help="where the random weights go (default: $TMPDIR)")
    doctor.set_defaults(func=_cmd_doctor)

    history = sub.add_parser("history", help="the metrics history written with --qg-history: list runs, "
                                             "compare two, a test's course, CSV export")
    history.add_argument("dir", type=Path, help="the history folder")
    views = history.add_subparsers(dest="view", required=True)
    views.add_parser("list", help="one line per run: date, host, commit, environment, tests, failures")
    compare = views.add_parser("compare", help="every metric of every test in two runs, with the change")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    course = views.add_parser("course", help="one test's metrics run by run, oldest first")
    course.add_argument("test_id", help="a test id such as tiny-red-circle-s0")
    export = views.add_parser("csv", help="every record as CSV (to stdout, or --output FILE)")
    export.add_argument("--output", "-o", type=Path, default=None)
    report = views.add_parser("report", help="OUT/trends.html: every test's sparklines and the tests that moved "
                                             "most since a baseline run")
    report.add_argument("out", type=Path, help="output folder (created)")
    report.add_argument("--runs", type=int, default=20, help="the last RUNS runs (default 20)")
    report.add_argument("--baseline", default="oldest",
                        help="oldest (default: the oldest run shown), previous (the run before the latest) or a run id")
    report.add_argument("--metric", choices=list(METRICS), default="lpips",
                        help="the metric the 'moved most' tables rank by (default lpips)")
    report.add_argument("--top", type=int, default=10, help="rows per checkpoint in those tables (default 10)")
    history.set_defaults(func=_cmd_history)

    sweep = sub.add_parser("sweep", help="sensitivity sweep: measure each layer group of a quantized DiT kept in "
                                         "bf16 and quantized alone, and recommend the cheapest groups to keep in bf16 "
                                         "(--groups components: which model components to quantize)",
                           description="Exit status: 0 with a confirmed recommendation or when the scheme already "
                                       "meets the target, 3 when no subset of the groups reaches it (or the "
                                       "confirming run missed; with --groups components: when no component "
                                       "meets it quantized alone), 1 or 2 on errors.")
    sweep.add_argument("--checkpoint", required=True, help="a checkpoint id of the configuration")
    sweep.add_argument("--scheme", required=True,
                       help="a scheme id of that checkpoint, or a diffsynth.core.quant method name (bitsandbytes_nf4); "
                            "with --groups components also a storage dtype (float8_e4m3fn)")
    sweep.add_argument("--config", type=Path, default=None,
                       help="quant_guard configuration (default: as the plugin finds it, from pyproject.toml)")
    sweep.add_argument("--case", action="append", default=[], metavar="ID",
                       help="only this case (repeatable; default: every case of the checkpoint)")
    sweep.add_argument("--seed", action="append", default=[], type=int, metavar="N",
                       help="only this configured seed (repeatable; default: every configured seed)")
    sweep.add_argument("--groups", choices=("layers", "components"), default="layers",
                       help="layers: the DiT's layer groups at --granularity (default); components: the model "
                            "components (DiT, each text encoder, VAE), each quantized alone with --scheme (a storage "
                            "dtype or method applies to every component; a scheme with components sweeps its "
                            "components), ranked by quality lost per byte saved, and a components = {...} scheme "
                            "recommended")
    sweep.add_argument("--granularity", choices=GRANULARITIES, default="block",
                       help="block: each joint block, each single block, the embedders, the final layer (default); "
                            "layer: attention qkv / out, feed-forward, modulation of each block, each embedder")
    for metric, low, high, what in (("lpips", 0.0, 2.0, "max LPIPS"), ("ssim", -1.0, 1.0, "min SSIM"),
                                    ("psnr", 0.0, 200.0, "min PSNR in dB")):
        sweep.add_argument(f"--target-{metric}", type=_bounded_float(low, high, f"--target-{metric}"), default=None,
                           metavar="X",
                           help=f"{what} every case must meet (default: the case's configured threshold for the "
                                "scheme)")
    sweep.add_argument("--report-dir", type=Path, default=None,
                       help="where sweep/<checkpoint>-<scheme>/ goes (default: the configuration's report_dir)")
    sweep.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                       help="a line per render step at most this often during long renders (default 10)")
    sweep.set_defaults(func=_cmd_sweep)

    # listed for --help; its arguments are parsed by quant_guard.judge.lpips_weights.main (see main())
    sub.add_parser("lpips-weights", help="provide or check the LPIPS AlexNet weights offline "
                                         "(quant-guard lpips-weights --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lpips-weights"]:
        from quant_guard.judge.lpips_weights import main as lpips_main

        return lpips_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
