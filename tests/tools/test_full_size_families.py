"""``quant-guard doctor --full-size --family F`` for the families beyond FLUX.1 (Qwen-Image, Z-Image,
FLUX.2): at tiny size on this CPU through the gate's own code and DiffSynth's own loader, and at
full size without the weights: parameter counts on the meta device against the figures of each
family's FACTS.md, and DiffSynth's registry recognising every file as the model it is."""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Any

import pytest

from helpers import components_toml, sparse_safetensors_shards
from quant_guard.cli import main as cli_main
from quant_guard.config.families import FAMILIES as SETTINGS
from quant_guard.model.families import family

FAMILIES = ("qwen-image", "z-image", "flux2", "wan")
CLIP_FRAMES = 5  # a video family's clip in the tiny-size doctor run (the checkpoint's render.frames)

# Parameters per file at full size, as each family's FACTS.md states them ("Full-size shapes";
# tiny_flux2/FACTS.md's table), and of the tiny ("The tiny"), exact.
FIGURES: dict[tuple[str, str], dict[str, str]] = {
    ("qwen-image", "qwen-image"): {"dit": "20.430 B", "text_encoder": "8.292 B", "vae": "0.127 B"},
    ("z-image", "z-image"): {"dit": "6.155 B", "text_encoder": "4.022 B", "vae": "84 M"},
    ("flux2", "flux.2-klein-4b"): {"dit": "3.876 B", "text_encoder": "4.02 B", "vae": "84.0 M"},
    ("flux2", "flux.2-klein-9b"): {"dit": "9.079 B", "text_encoder": "7.57 B", "vae": "84.0 M"},
    ("qwen-image", "tiny"): {"dit": "1888768", "text_encoder": "241536", "vae": "2577987"},
    ("z-image", "tiny"): {"dit": "1685568", "text_encoder": "195104", "vae": "665939"},
    ("flux2", "tiny"): {"dit": "1663360", "text_encoder": "1063424", "vae": "912404"},
    ("wan", "wan2.1-t2v-14b"): {"dit": "14.29 B", "text_encoder": "5.68 B", "vae": "126.9 M"},
    ("wan", "wan2.1-t2v-1.3b"): {"dit": "1.419 B", "text_encoder": "5.68 B", "vae": "126.9 M"},
    ("wan", "tiny"): {"dit": "564672", "text_encoder": "92736", "vae": "668043"},
}
# What DiffSynth fetches each file as (its model_name, FACTS.md "Pipeline"/"Components"), any size
REGISTRY_NAMES = {
    "qwen-image": {"dit": {"qwen_image_dit"}, "text_encoder": {"qwen_image_text_encoder"}, "vae": {"qwen_image_vae"}},
    "z-image": {"dit": {"z_image_dit"}, "text_encoder": {"z_image_text_encoder"},
                "vae": {"flux_vae_encoder", "flux_vae_decoder"}},
    "flux2": {"dit": {"flux2_dit"}, "text_encoder": {"z_image_text_encoder"}, "vae": {"flux2_vae"}},
    "wan": {"dit": {"wan_video_dit"}, "text_encoder": {"wan_video_text_encoder"}, "vae": {"wan_video_vae"}},
}
# DiffSynth's registry hashes of the released files (diffsynth/configs/model_configs.py, cited in
# FACTS.md): the synthetic full-size file has the released file's tensor names and shapes
RELEASED_HASHES = {
    ("qwen-image", "qwen-image"): {"dit": "0319a1cb19835fb510907dd3367c95ff",
                                   "text_encoder": "8004730443f55db63092006dd9f7110e",
                                   "vae": "ed4ea5824d55ec3107b09815e318123a"},
    ("z-image", "z-image"): {"dit": "fc3a8a1247fe185ce116ccbe0e426c28",
                             "text_encoder": "0f050f62a88876fea6eae0a18dac5a2e"},
    ("flux2", "flux.2-klein-4b"): {"dit": "3bde7b817fec8143028b6825a63180df",
                                   "text_encoder": "0f050f62a88876fea6eae0a18dac5a2e",
                                   "vae": "c54288e3ee12ca215898840682337b95"},
    ("flux2", "flux.2-klein-9b"): {"dit": "39c6fc48f07bebecedbbaa971ff466c8",
                                   "vae": "c54288e3ee12ca215898840682337b95"},
    ("wan", "wan2.1-t2v-14b"): {"dit": "aafcfd9672c3a2456dc46e1cb6e52c70",
                                "text_encoder": "9c8818c2cbea55eca56c7b447df170da",
                                "vae": "ccc42284ea13e1ad04693284c7a09be6"},
    ("wan", "wan2.1-t2v-1.3b"): {"dit": "9269f8db9040a9d860eaca435be61814"},
}


def _stated(figure: str) -> tuple[float, float]:
    """A stated figure ("20.430 B", "84 M", "1888768") -> (value, tolerance): 0.1 %, or half a unit
    of its last stated digit where the figure is rounded coarser than that."""
    number, _, unit = figure.partition(" ")
    scale = {"": 1, "M": 1e6, "B": 1e9}[unit]
    decimals = len(number.partition(".")[2])
    value = float(number) * scale
    return value, 0.0 if not unit else max(1e-3 * value, 0.5 * 10 ** -decimals * scale)


def _parameters(tensors: dict[str, tuple[tuple[int, ...], Any]]) -> int:
    total = 0
    for shape, _ in tensors.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


@pytest.mark.parametrize("family_name, size", sorted(FIGURES))
def test_each_architecture_has_the_parameters_facts_states(family_name: str, size: str) -> None:
    from quant_guard.tools.synthetic import architectures, state_shapes

    counts = {name: _parameters(t) for name, t in state_shapes(architectures(family(family_name))[size]).items()}
    assert set(counts) == set(FIGURES[family_name, size])
    for name, figure in FIGURES[family_name, size].items():
        value, tolerance = _stated(figure)
        assert abs(counts[name] - value) <= tolerance, (name, counts[name], figure)


@pytest.mark.parametrize("family_name, size", sorted(FIGURES))
def test_diffsynth_recognises_every_file_as_the_model_it_is(tmp_path: Path, family_name: str, size: str) -> None:
    """The file's hash (names and shapes, read from header-only shards by DiffSynth's own
    ``hash_model_file``) names exactly the models the pipeline fetches, at full size the released
    file's hash where FACTS.md names one; and each entry it matches loads the file into its class
    (built with the entry's ``extra_kwargs``, the file's tensors through the entry's converter, a
    strict ``load_state_dict`` as DiffSynth's ``load_model`` does), on the meta device."""
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader import hash_model_file

    from quant_guard.tools.synthetic import architectures, register, state_shapes

    arch = architectures(family(family_name))[size]
    register(arch)
    register(arch)  # idempotent
    classes = {c.model_class for c in arch.classes}
    for name, tensors in state_shapes(arch).items():
        model_hash = hash_model_file([str(p) for p in sparse_safetensors_shards(tmp_path, name, tensors)])
        entries = [(c["model_name"], c["model_class"]) for c in MODEL_CONFIGS if c["model_hash"] == model_hash]
        assert len(entries) == len(set(entries)), (name, entries)  # loaded once per model
        assert {n for n, _ in entries} == REGISTRY_NAMES[family_name][name], (name, entries)
        assert {c for _, c in entries} <= classes, (name, entries)
        released = RELEASED_HASHES.get((family_name, size), {}).get(name)
        assert released is None or model_hash == released, (name, model_hash)
        for entry in (c for c in MODEL_CONFIGS if c["model_hash"] == model_hash):
            _load_on_meta(entry, tensors)


def _load_on_meta(entry: dict[str, Any], tensors: dict[str, tuple[tuple[int, ...], Any]]) -> None:
    """What ``diffsynth.models.model_loader.ModelPool.load_model_file`` does with a registry entry,
    without weights: a missing or wrong converter, or another width, fails the strict load."""
    import torch
    from diffsynth.models.model_loader import ModelPool

    pool = ModelPool()
    with torch.device("meta"):
        model = pool.import_model_class(entry["model_class"])(**entry.get("extra_kwargs", {}))
        state = {k: torch.empty(shape, dtype=torch.bfloat16) for k, (shape, _) in tensors.items()}
    if "state_dict_converter" in entry:
        state = pool.import_model_class(entry["state_dict_converter"])(state)
    model.load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize("family_name", FAMILIES)
def test_tiny_shapes_are_the_embedded_tiny_checkpoint(family_name: str) -> None:
    """The tiny architecture writes the files of the family's embedded tiny: same names (the text
    encoder's Hugging Face layout included) and shapes."""
    from safetensors import safe_open

    from quant_guard.tools.synthetic import architectures, state_shapes

    fam = family(family_name)
    assert fam.tiny is not None
    shipped_files = fam.tiny.files()
    for name, tensors in state_shapes(architectures(fam)["tiny"]).items():
        with safe_open(str(shipped_files[name]), framework="pt") as f:
            shipped = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        assert shipped == {k: s for k, (s, _) in tensors.items()}, name


@pytest.mark.parametrize("family_name", FAMILIES)
def test_the_synthetic_tokenizer_fits_every_size_of_the_family(tmp_path: Path, family_name: str) -> None:
    from transformers import AutoTokenizer

    from quant_guard.model.families.base import import_dotted
    from quant_guard.tools.synthetic import state_shapes

    fam = family(family_name)
    folders = [tmp_path / t.name for t in fam.tokenizers]
    import_dotted(fam.tokenizer_writer)(*folders)
    ids = len(AutoTokenizer.from_pretrained(str(folders[0])))
    for arch in fam.architectures:
        rows = [shape[0] for k, (shape, _) in state_shapes(arch)["text_encoder"].items()
                if k.endswith(("embed_tokens.weight", "token_embedding.weight"))]  # Wan's umT5: the latter
        assert len(rows) == 1 and rows[0] >= ids, (arch.name, rows, ids)


CONFIG = """
[tool.quant_guard]
golden_dir = "golden"

[[tool.quant_guard.checkpoints]]
id = "{family}-files"
family = "{family}"
device = "cpu"
schemes = ["float8_e4m3fn"]
render = {{ steps = 2, size = "64x64"{frames} }}
limits = {{ peak_vram = "3 GiB" }}
[tool.quant_guard.checkpoints.components]
{components}

[[tool.quant_guard.cases]]
id = "c"
prompt = "a red circle"
seeds = [0]
"""


def _config(tmp_path: Path, family_name: str) -> Path:
    """A checkpoint of the family given by files (the family's embedded tiny's)."""
    fam = family(family_name)
    assert fam.tiny is not None
    config = tmp_path / "qg.toml"
    frames = f", frames = {CLIP_FRAMES}" if SETTINGS[family_name].frame_step else ""
    config.write_text(CONFIG.format(family=family_name, components=components_toml(fam.tiny.files()), frames=frames))
    return config


def _doctor(config: Path, tmp_path: Path, *extra: str) -> int:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    code = cli_main(["doctor", "--qg-config", str(config), "--full-size", *extra, "--device", "cpu",
                     "--steps", "2", "--work-dir", str(work)])  # no --size: the checkpoint's 64x64
    assert list(work.iterdir()) == []  # the random weights are gone
    return code


@pytest.mark.parametrize("family_name", FAMILIES)
def test_full_size_doctor_runs_each_family_at_tiny_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], family_name: str) -> None:
    """The family's tiny shapes as a synthetic checkpoint: DiffSynth's loader builds the family's
    pipeline with every component of the tiny's classes, the reference renders, float8 is swapped
    in and renders, under the family's checkpoint's plan; the table has the figures and the
    family's published ones, and that checkpoint's limits are checked against them."""
    import quant_guard.model.pipelines as pipelines
    from quant_guard.tools.synthetic import architectures

    tiny = architectures(family(family_name))["tiny"]
    fam = family(family_name).having({c.component for c in tiny.classes})  # the tiny writes no second DiT
    built: list[weakref.ref[Any]] = []
    real_build = pipelines.build_pipeline

    def build(resolved: Any, scheme: Any, device: str, *, plan: Any = None) -> Any:
        assert (resolved.id, resolved.family) == ("synthetic-tiny", family_name)
        assert set(plan.components) == set(fam.model_components)
        pipe = real_build(resolved, scheme, device, plan=plan)
        for component in fam.components:  # each file loaded as the tiny's class of that component
            loaded = type(getattr(pipe, component.attribute))
            assert f"{loaded.__module__}.{loaded.__qualname__}" in {
                c.model_class for c in tiny.classes if c.component == component.name}, component
        built.append(weakref.ref(pipe))
        return pipe

    import quant_guard.model.render as render_module

    requests: list[Any] = []
    rendered: list[int] = []  # frames each render returned
    real_render = render_module.render

    def render(pipe: Any, request: Any) -> Any:
        requests.append(request)
        result = real_render(pipe, request)
        rendered.append(1 if result.frames is None else len(result.frames))
        return result

    monkeypatch.setattr(pipelines, "build_pipeline", build)
    monkeypatch.setattr(render_module, "render", render)
    code = _doctor(_config(tmp_path, family_name), tmp_path, "--family", family_name, "--shapes", "tiny")
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(built) == 1  # built once, float8 swapped in
    # rendered with the guidance of the family's DiffSynth example (true CFG only where it uses it)
    assert [r.guidance for r in requests] == [SETTINGS[family_name].render.guidance] * 2
    # a video family renders the checkpoint's clip, every frame of it, not a single frame
    clip = CLIP_FRAMES if SETTINGS[family_name].frame_step else 1
    assert [r.frames for r in requests] == rendered == [clip] * 2
    assert {(r.width, r.height) for r in requests} == {(64, 64)}  # the checkpoint's size, its limits' size
    assert f"full size: tiny ({fam.label}) under checkpoint {family_name}-files's memory plan" in out
    frames = f", {clip} frames" if clip > 1 else ""
    assert f"Random weights at {fam.label} tiny shapes, 64x64{frames}, 2 steps" in out
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip().strip("|").split("|")]
                                          for line in out.splitlines() if line.startswith("| "))
            if cells[0] in ("bf16", "float8_e4m3fn")}
    assert list(rows) == ["bf16", "float8_e4m3fn"], out
    for scheme, cells in rows.items():
        assert cells[1] == ("build" if scheme == "bf16" else "swap")
        assert all(re.fullmatch(r"\d+\.\d GB", cells[i]) for i in (2, 3, 5, 6)), cells
        assert re.fullmatch(r"\d+\.\d{3} s", cells[7]), cells
    published = " ".join(cells[10] for cells in rows.values())
    for anchor in fam.full_size.published:  # the family's own figures, and no other family's
        assert anchor.source in published, out
    assert "FLUX.1-dev" not in published
    assert "peak_vram ok" in rows["float8_e4m3fn"][9], out
    assert re.search(r"\[  ok\] peak_vram +float8_e4m3fn: limit 3.00 GiB, .* measured at tiny size, 64x64", out), out
    assert out.rstrip().endswith("doctor: ready")


def test_full_size_of_one_family_is_not_compared_with_another_familys_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Z-Image measurement follows no FLUX.2 checkpoint's plan and checks none of its limits;
    naming that checkpoint is an error, as is a size the family does not have."""
    config = _config(tmp_path, "flux2")
    assert _doctor(config, tmp_path, "--family", "z-image", "--shapes", "tiny") == 0
    out = capsys.readouterr().out
    assert "full size: tiny (Z-Image) under no checkpoint's memory plan" in out
    assert "Random weights at Z-Image tiny shapes, 64x64, 2 steps" in out  # no checkpoint: the tiny's size
    assert re.search(r"checkpoint flux2-files\n(.*\n)*  \[info\] measured +at Z-Image shapes, not this "
                     r"checkpoint's family \(FLUX.2\): not compared", out), out
    assert "peak_vram ok" not in out

    assert _doctor(config, tmp_path, "--family", "z-image", "--shapes", "tiny", "--checkpoint", "flux2-files") == 2
    assert "checkpoint 'flux2-files' is a FLUX.2 checkpoint, --full-size measures Z-Image shapes: pass --family " \
           "flux2" in capsys.readouterr().err
    assert _doctor(config, tmp_path, "--family", "z-image", "--shapes", "flux.2-klein-4b") == 2
    assert "model family 'z-image' has no architecture 'flux.2-klein-4b'; known: z-image, tiny" \
           in capsys.readouterr().err


def test_full_size_on_a_cpu_is_refused_at_every_size_but_the_tiny(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import quant_guard.model.pipelines as pipelines

    monkeypatch.setattr(pipelines, "pick_device", lambda wanted: "cpu")  # no CUDA here, as on this machine
    for shapes in ("flux.2-klein-4b", "flux.2-klein-9b"):
        assert cli_main(["doctor", "--full-size", "--family", "flux2", "--shapes", shapes]) == 2
        assert "--full-size needs a CUDA device" in capsys.readouterr().err
    for name in FAMILIES:  # without --shapes: the family's full size
        assert cli_main(["doctor", "--full-size", "--family", name]) == 2
        assert f"--full-size needs a CUDA device ({family(name).full_size.label} shapes" in capsys.readouterr().err


def test_the_readmes_24_gb_table_has_each_full_size_files_sizes() -> None:
    """README, "Other families on a 24 GB card": the DiT and text encoder GiB are the bf16 files
    the full-size architecture writes."""
    from quant_guard.tools.synthetic import file_bytes

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| `([\w-]+)` \([^|]+\) \| ([\d.]+) \| ([\d.]+) ", readme, re.M)}
    assert set(rows) == set(FAMILIES), rows
    for name, (dit, text_encoder) in rows.items():
        sizes = file_bytes(family(name).full_size)
        assert (dit, text_encoder) == (f"{sizes['dit'] / 2**30:.1f}", f"{sizes['text_encoder'] / 2**30:.1f}"), name


@pytest.mark.parametrize("family_name", FAMILIES)
def test_a_configured_checkpoint_not_downloaded_is_planned_at_its_familys_full_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family_name: str) -> None:
    """The doctor's disk and host RAM figures for a checkpoint still to download are its own
    family's full-size files (not FLUX.1-dev's)."""
    from quant_guard.config.limits import Budget
    from quant_guard.config.project import CheckpointSpec, ComponentSource, RenderDefaults
    from quant_guard.config.units import format_bytes
    from quant_guard.tools import doctor
    from quant_guard.tools.synthetic import file_bytes

    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(tmp_path / "models"))
    monkeypatch.setattr(doctor, "_free_bytes", lambda folder: 1000 * 2**30)
    fam = family(family_name)
    spec = CheckpointSpec(id="real", embedded=None, family=family_name, device="cuda", marks=("gpu",),
                          cpu_offload=True, render=RenderDefaults(), limits=Budget(),
                          components={name: ComponentSource(model_id="org/model", origin_file_pattern=f"{name}/*")
                                      for name in SETTINGS[family_name].components})
    files = doctor.checkpoint_files(spec)
    sizes = file_bytes(fam.full_size)
    # every component the configuration knows (Wan's optional second DiT too: the first DiT's size)
    total = sum(sizes.get(name, sizes["dit"]) for name in fam.model_components) + \
        sum(t.estimated_bytes for t in fam.tokenizers)
    [finding] = doctor.disk_findings(spec, files)
    assert finding.text.startswith(f"missing {', '.join(fam.component_names)}: about {format_bytes(total)} to "
                                   f"download at {fam.full_size.label} size"), finding.text
    reference = doctor.checkpoint_host_plans(spec, files, "cuda")["bf16"].describe()
    assert f"dit {format_bytes(sizes['dit'])}" in reference and \
           f"text_encoder {format_bytes(sizes['text_encoder'])}" in reference, reference
